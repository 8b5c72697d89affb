"""Python's smtplib, imaplib and poplib as lab clients (real software), run as ``tb-pyclient``.

``tb-pyclient`` (``testbed/clientprogs/pyclient.py``, installed in the client
image) drives the standard library's own clients. They connect through
``socket.create_connection``: getaddrinfo's addresses one after the other,
each with the full timeout (study notes, slide 23: "sequential").
"""

from __future__ import annotations

import json
import shlex
from typing import Any, ClassVar

from .base import ClientAdapter, ClientOutcome, ClientRequest

#: The last line of every tb-pyclient run.
RESULT_PREFIX = "tb-pyclient-result: "
PROGRAM = "tb-pyclient"


def pyclient_args(request: ClientRequest, *, first_address_only: bool = False) -> list[str]:
    """tb-pyclient's argument list for a request (the same for the real client and the Outlook model)."""
    if request.family != "any":
        raise ValueError(
            f"Python's smtplib/imaplib/poplib have no address-family option (family {request.family!r}); "
            "use family: any")
    if request.action == "submit" and request.protocol != "smtp":
        raise ValueError(f"submit is SMTP only, not {request.protocol}")
    if request.action == "fetch" and request.protocol == "smtp":
        raise ValueError("fetch is IMAP or POP3, not smtp")
    args = [PROGRAM, "--action", request.action, "--protocol", request.protocol,
            "--server", request.server, "--port", str(request.port), "--timeout", f"{request.timeout_s:g}"]
    if first_address_only:
        args.append("--first-address-only")
    if request.action == "submit":
        args += ["--from", request.sender]
        for rcpt in request.recipients:
            args += ["--to", rcpt]
        args += ["--message-id", request.message_id, "--subject", request.subject, "--helo", request.helo]
    if request.action == "fetch":
        args += ["--user", request.user, "--password", request.password]
    return args


def parse_result(stdout: str) -> dict[str, Any] | None:
    """The JSON of tb-pyclient's result line (its last), or None when it printed none."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            try:
                value = json.loads(line[len(RESULT_PREFIX):])
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def pyclient_outcome(rc: int, stdout: str, stderr: str) -> ClientOutcome:
    result = parse_result(stdout)
    if result is None:
        last = next((ln.strip() for ln in reversed(stderr.splitlines()) if ln.strip()), "")
        return ClientOutcome(False, last or f"tb-pyclient printed no result (exit status {rc})",
                             f"exit status {rc}")
    detail = [f"connected to {result['connected_to']}" if result.get("connected_to") else "not connected"]
    if result.get("attempted") and not result.get("connected_to"):
        detail.append(f"tried only {result['attempted']} of {', '.join(result.get('resolved') or [])}")
    if "messages" in result:
        detail.append(f"{result['messages']} message(s)")
    return ClientOutcome(bool(result.get("ok")), result.get("reply"), "; ".join(detail))


class PythonClient(ClientAdapter):
    """Real software: the Python standard library's mail clients."""

    software = "python"
    actions: ClassVar[frozenset[str]] = frozenset({"submit", "fetch", "connect"})
    protocols: ClassVar[frozenset[str]] = frozenset({"smtp", "imap", "pop3"})
    families = frozenset({"any"})  # no option to use one family only
    first_address_only: ClassVar[bool] = False

    def version_command(self) -> str | None:
        return "python3 --version"

    def client_command(self, request: ClientRequest) -> str:
        return shlex.join(pyclient_args(request, first_address_only=self.first_address_only))

    def outcome(self, rc: int, stdout: str, stderr: str) -> ClientOutcome:
        return pyclient_outcome(rc, stdout, stderr)

    # The scenario's send step.

    def last_reply(self, output: str) -> str | None:
        """The server's reply to the end of DATA (tb-pyclient's result line), if the submission got that far."""
        result = parse_result(output)
        reply = result.get("reply") if result else None
        return reply if isinstance(reply, str) and reply[:3].isdigit() else None
