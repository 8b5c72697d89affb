"""The lab's mail client: swaks, a real SMTP client, run inside the client container."""

from __future__ import annotations

import shlex

from .base import HostAdapter


class SwaksClient(HostAdapter):
    software = "swaks"
    kind = "client"

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
