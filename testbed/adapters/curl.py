"""curl, a real client for SMTP submission and IMAP/POP3 fetching.

curl races the address families (Happy Eyeballs, RFC 6555): it starts with the
first address getaddrinfo returns, and starts the first address of the other
family once ``--happy-eyeballs-timeout-ms`` passed (200 ms by default; left at
the default here, it is what real users get). ``--connect-timeout`` bounds the
whole connection phase, every address together, not each attempt.

The transcript (``-v``) goes to stderr: ``*`` curl's progress, ``>`` what it
sent, ``<`` what the server said; a failure ends with ``curl: (N) reason``.
"""

from __future__ import annotations

import re
import shlex

from ._mailclient import check_request, family_flags, first_smtp_error, last_smtp_reply, message_text
from .base import ClientAdapter, ClientOutcome, ClientRequest

#: curl's default; the adapter does not change it.
HAPPY_EYEBALLS_TIMEOUT_MS = 200

_CURL_ERROR_RE = re.compile(r"^curl: \((?P<code>\d+)\) (?P<reason>.*)$")
_CONNECTED_RE = re.compile(r"^\* Connected to (?P<host>\S+) \((?P<addr>[^)]*)\) port (?P<port>\d+)")
#: IMAP tagged replies (``A003 OK ...``) and POP3 status lines.
_IMAP_TAGGED_RE = re.compile(r"^A\d+ (OK|NO|BAD)\b")
_POP3_STATUS_RE = re.compile(r"^[+-](OK|ERR)\b")


def _format_port(req: ClientRequest) -> str:
    return f"{req.server}:{req.port}"


class CurlClient(ClientAdapter):
    software = "curl"
    image = "client"
    actions = frozenset({"submit", "fetch", "connect"})
    protocols = frozenset({"smtp", "imap", "pop3"})
    transcript_on_stderr = True

    def version_command(self) -> str:
        return "curl --version | head -n 1"

    def parse_version(self, output: str) -> str:
        # "curl 8.14.1 (x86_64-pc-linux-gnu) libcurl/8.14.1 OpenSSL/3.5.9 ..." -> "curl 8.14.1"
        return super().parse_version(output).split(" (")[0]

    def client_command(self, request: ClientRequest) -> str:
        req = request
        check_request(self.software, req, self.actions, self.protocols)
        if req.action == "submit" and req.protocol != "smtp":
            raise ValueError(f"curl submits over smtp, not {req.protocol}")
        if req.action == "fetch" and req.protocol == "smtp":
            raise ValueError("curl fetches over imap or pop3, not smtp")
        args = ["curl", "-v", "-sS", "--connect-timeout", f"{req.timeout_s:g}", *family_flags(req.family)]
        if req.action == "submit":
            # The URL's path is the EHLO name.
            url = f"smtp://{_format_port(req)}/{req.helo}" if req.helo else f"smtp://{_format_port(req)}"
            args += ["--mail-from", req.sender]
            for rcpt in req.recipients:
                args += ["--mail-rcpt", rcpt]
            args += ["--upload-file", "-", url]
            return f"printf '%s' {shlex.quote(message_text(req))} | {shlex.join(args)}"
        if req.user:
            args += ["--user", f"{req.user}:{req.password}"]
        if req.action == "fetch":
            # imap://server/INBOX lists INBOX (LIST "INBOX" *); pop3://server/ lists the messages (LIST).
            path = "INBOX" if req.protocol == "imap" else ""
            return shlex.join([*args, f"{req.protocol}://{_format_port(req)}/{path}"])
        # connect: a harmless command after the greeting; only reaching the server counts.
        return shlex.join([*args, "--request", "NOOP", f"{req.protocol}://{_format_port(req)}/"])

    @staticmethod
    def _server_lines(output: str) -> list[str]:
        return [line[2:].rstrip() for line in output.splitlines() if line.startswith("< ")]

    def last_reply(self, output: str) -> str | None:
        return last_smtp_reply(self._server_lines(output))

    def outcome(self, rc: int, stdout: str, stderr: str) -> ClientOutcome:
        lines = stderr.splitlines()
        server = self._server_lines(stderr)
        connected = next((m for ln in lines if (m := _CONNECTED_RE.match(ln))), None)
        where = f"connected to {connected['addr']} port {connected['port']}" if connected else "never connected"
        error = next((m for ln in lines if (m := _CURL_ERROR_RE.match(ln))), None)
        if connected and "> NOOP" in lines:
            # connect: reaching the server is the outcome, whatever it says to NOOP.
            return ClientOutcome(True, server[0] if server else None, where)
        if rc == 0:
            return ClientOutcome(True, self._decisive(server, ok=True), where)
        reply = self._decisive(server, ok=False) if connected else None
        if reply is None and error:
            reply = error.group(0)
        detail = f"{where}; curl exit {rc}" + (f" ({error['reason']})" if error and reply != error.group(0) else "")
        return ClientOutcome(False, reply, detail)

    @staticmethod
    def _decisive(server: list[str], ok: bool) -> str | None:
        """Success: SMTP's end-of-DATA reply, IMAP's last tagged reply, POP3's last status line.

        Failure: the first refusal (SMTP 4xx/5xx, IMAP tagged NO/BAD, POP3 -ERR), or
        None when the server refused nothing (curl's own error line decides then).
        """
        tagged = [s for s in server if _IMAP_TAGGED_RE.match(s)]
        status = [s for s in server if _POP3_STATUS_RE.match(s)]
        if ok:
            if tagged:
                return tagged[-1]
            return status[-1] if status else last_smtp_reply(server)
        if tagged:
            return next((s for s in tagged if not s.split()[1] == "OK"), None)
        if status:
            return next((s for s in status if s.startswith("-ERR")), None)
        return first_smtp_error(server)
