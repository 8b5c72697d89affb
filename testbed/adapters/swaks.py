"""The lab's mail client: swaks, a real SMTP client, run inside the client container."""

from __future__ import annotations

import shlex

from .base import ClientAdapter


class SwaksClient(ClientAdapter):
    software = "swaks"
    image = "client"

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
        args = [
            "swaks",
            "--server", server,
            "--from", sender,
            "--to", ",".join(recipients),
            "--helo", helo,
            "--header", f"Message-Id: {message_id}",
            "--header", f"Subject: {subject}",
            "--body", f"testbed message {message_id}\n",
            "--timeout", f"{timeout_s}s",
        ]
        if family == "ipv4":
            args.append("-4")
        elif family == "ipv6":
            args.append("-6")
        return " ".join(shlex.quote(a) for a in args)

    def last_reply(self, output: str) -> str | None:
        """The server's reply to the end of DATA, from swaks' transcript."""
        replies = [line[3:].strip() for line in output.splitlines() if line.startswith(("<~ ", "<**", "<- "))]
        data_replies = [r for r in replies if r[:3].isdigit()]
        for r in reversed(data_replies):
            if not r.startswith("221"):
                return r
        return None
