"""Dovecot as a mailstore: IMAP, POP3 and LMTP; config syntax per Debian release."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING

from ..mailbox import mailbox_password
from ..templating import render
from .base import SERVICE_SCRIPT, MailstoreAdapter, RenderedFile

if TYPE_CHECKING:
    from ..plan import HostPlan, LabPlan

#: Debian release -> config template (2.3 and 2.4 syntaxes are incompatible).
CONFIG_TEMPLATES = {"bookworm": "dovecot/dovecot-2.3.conf.j2", "trixie": "dovecot/dovecot-2.4.conf.j2"}


class DovecotAdapter(MailstoreAdapter):
    software = "dovecot"
    image = "dovecot"
    suites = tuple(CONFIG_TEMPLATES)
    data_dirs = ("/var/vmail",)

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        ctx = {"host": host, "password": mailbox_password("")}
        return [
            RenderedFile("/etc/dovecot/dovecot.conf", render(CONFIG_TEMPLATES[plan.suite], **ctx)),
            RenderedFile("/etc/dovecot/users", render("dovecot/users.j2", **ctx), 0o640),
            RenderedFile(SERVICE_SCRIPT, render("dovecot/service.j2", **ctx), 0o755),
        ]

    def version_command(self) -> str:
        return "dovecot --version"

    def ready_command(self, host: HostPlan) -> str:
        return "ss -Hltn 'sport = :24' | grep -q LISTEN && ss -Hltn 'sport = :143' | grep -q LISTEN"

    def mailbox_command(self, domain: str, user: str) -> str:
        """Every message of a user's INBOX, read with doveadm inside the store."""
        address = shlex.quote(f"{user}@{domain}")
        return (
            f"for uid in $(doveadm search -u {address} mailbox INBOX ALL | awk '{{print $2}}'); do "
            f"printf '\\n==> testbed-message INBOX/%s\\n' \"$uid\"; "
            f"doveadm fetch -u {address} text mailbox INBOX uid \"$uid\" | sed '1s/^text://'; done"
        )
