"""swaks, a real SMTP client: the lab's default client (the scenario's ``send`` step uses it).

Address fallback differs per suite (shared/notes/clients.md, slide 23):
bookworm's swaks 20201014 connects through IO::Socket::INET6 without
``MultiHomed``, so it tries the first address getaddrinfo returns and no other;
trixie's 20240103 uses IO::Socket::IP and tries them in turn, ``--timeout``
applying to each attempt.
"""

from __future__ import annotations

import re
import shlex

from ._mailclient import check_request, family_flags, first_smtp_error, last_smtp_reply, whole_seconds
from .base import ClientAdapter, ClientOutcome, ClientRequest

#: swaks' transcript: "<-  " a reply, "<** " an error reply, " -> " what it sent,
#: "=== " its progress, "*** " its own errors.
_REPLY_PREFIXES = ("<~ ", "<**", "<- ")
_CONNECTED = "=== Connected to "


class SwaksClient(ClientAdapter):
    software = "swaks"
    image = "client"
    default = True
    actions = frozenset({"submit", "connect"})
    protocols = frozenset({"smtp"})

    def version_command(self) -> str:
        return "swaks --version | head -n 1"

    def client_command(self, request: ClientRequest) -> str:
        req = request
        check_request(self.software, req, self.actions, self.protocols)
        args = ["swaks", "--server", req.server, "--port", str(req.port), "--timeout", f"{whole_seconds(req.timeout_s)}s"]
        args += family_flags(req.family)
        if req.action == "connect":
            # Connects, reads the banner, says QUIT.
            args += ["--helo", req.helo] if req.helo else []
            args += ["--quit-after", "connect"]
        else:
            args += _message_args(req.sender, req.recipients, req.message_id, req.subject or "testbed message", req.helo)
        return shlex.join(args)

    def send_command(
        self,
        *,
        server: str,
        sender: str,
        recipients: list[str],
        message_id: str,
        subject: str,
        helo: str,
        family: str = "any",
        timeout_s: int = 30,
    ) -> str:
        args = ["swaks", "--server", server, *_message_args(sender, recipients, message_id, subject, helo),
                "--timeout", f"{timeout_s}s", *family_flags(family)]
        return " ".join(shlex.quote(a) for a in args)

    @staticmethod
    def _replies(output: str) -> list[str]:
        return [line[3:].strip() for line in output.splitlines() if line.startswith(_REPLY_PREFIXES)]

    def last_reply(self, output: str) -> str | None:
        """The server's reply to the end of DATA, from swaks' transcript."""
        return last_smtp_reply(self._replies(output))

    def outcome(self, rc: int, stdout: str, stderr: str) -> ClientOutcome:
        """swaks exits 0 on success, 2 when it cannot connect, 2x when the server says no at a stage."""
        output = stdout + stderr
        lines = output.splitlines()
        connected = next((ln[len(_CONNECTED):].strip().removesuffix(".") for ln in lines if ln.startswith(_CONNECTED)),
                         None)
        replies = self._replies(output)
        # "*** Error connecting to HOST:PORT:" is followed by the socket library's reason on the next line.
        errors = [ln[4:].strip() for ln in lines if ln.startswith("*** ")]
        error = " ".join(e for e in errors[:2] if e) or None
        if rc == 0:
            reply = replies[0] if connected and not self._sent_mail(lines) else self.last_reply(output)
            return ClientOutcome(True, reply, f"connected to {connected}" if connected else "")
        server_error = next((ln[4:].strip() for ln in lines if ln.startswith("<**")), None)
        reply = server_error or first_smtp_error(replies) or error or (lines[-1].strip() if lines else None)
        detail = f"connected to {connected}" if connected else "never connected"
        return ClientOutcome(False, reply, f"{detail}; swaks exit {rc}")

    @staticmethod
    def _sent_mail(lines: list[str]) -> bool:
        return any(re.match(r"^ -> MAIL FROM:", ln) for ln in lines)


def _message_args(sender: str, recipients: list[str] | tuple[str, ...], message_id: str, subject: str,
                  helo: str) -> list[str]:
    args = ["--from", sender, "--to", ",".join(recipients)]
    args += ["--helo", helo] if helo else []
    return args + [
        "--header", f"Message-Id: {message_id}",
        "--header", f"Subject: {subject}",
        "--body", f"testbed message {message_id}\n",
    ]
