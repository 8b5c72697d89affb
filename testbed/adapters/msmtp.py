"""msmtp, a real SMTP submission client (sendmail-compatible, message on stdin).

msmtp tries getaddrinfo's addresses in turn (``src/net.c``); ``--timeout``
applies to each connection attempt (without it, the kernel's SYN retries
decide). It has no option to pick an address family. ``--debug`` prints its
settings and the SMTP dialog (``<--`` the server, ``-->`` msmtp) on stdout;
errors go to stderr as ``msmtp: ...``.
"""

from __future__ import annotations

import re
import shlex

from ._mailclient import check_request, first_smtp_error, last_smtp_reply, message_text, whole_seconds
from .base import ClientAdapter, ClientOutcome, ClientRequest

_ERROR_RE = re.compile(r"^msmtp: (?P<text>.*)$")
_SERVER_MESSAGE = "server message: "


class MsmtpClient(ClientAdapter):
    software = "msmtp"
    image = "client"
    actions = frozenset({"submit"})
    protocols = frozenset({"smtp"})
    transcript_on_stderr = True
    families = frozenset({"any"})  # no option to use one family only

    def version_command(self) -> str:
        return "msmtp --version | head -n 1"

    def client_command(self, request: ClientRequest) -> str:
        req = request
        check_request(self.software, req, self.actions, self.protocols)
        if req.family != "any":
            raise ValueError(f"msmtp has no option to use only {req.family} (family must be 'any')")
        args = [
            "msmtp", "--file=/dev/null", "--debug",
            f"--host={req.server}", f"--port={req.port}", f"--timeout={whole_seconds(req.timeout_s)}",
            "--auth=off", "--tls=off", f"--from={req.sender}",
        ]
        if req.helo:
            args.append(f"--domain={req.helo}")
        args += ["--", *req.recipients]
        return f"printf '%s' {shlex.quote(message_text(req))} | {shlex.join(args)}"

    @staticmethod
    def _server_lines(output: str) -> list[str]:
        return [line[4:].rstrip() for line in output.splitlines() if line.startswith("<-- ")]

    def last_reply(self, output: str) -> str | None:
        return last_smtp_reply(self._server_lines(output))

    def outcome(self, rc: int, stdout: str, stderr: str) -> ClientOutcome:
        """msmtp exits 0 on success, else a sysexits code (65 data error, 69, 75 temporary failure, ...)."""
        server = self._server_lines(stdout)
        if rc == 0:
            return ClientOutcome(True, self.last_reply(stdout), "accepted")
        errors = [m["text"] for ln in stderr.splitlines() if (m := _ERROR_RE.match(ln))]
        said = next((e[len(_SERVER_MESSAGE):] for e in errors if e.startswith(_SERVER_MESSAGE)), None)
        reply = said or first_smtp_error(server) or (errors[0] if errors else None)
        detail = "; ".join(e for e in errors if not e.startswith(_SERVER_MESSAGE)) or "failed"
        return ClientOutcome(False, reply, f"{detail}; msmtp exit {rc}")
