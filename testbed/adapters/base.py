"""The interfaces every adapter implements.

An adapter knows one piece of software: which image runs it, which files
configure it (rendered from its templates), how to start, stop, flush and
inspect it, and how to read its log. Adapters are pure: they return commands
and parse outputs; the fabric runs the commands inside containers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..events import MailboxMessage, MailEvent, QueueEntry
from ..mailbox import maildir_dump_command, parse_maildir_dump

if TYPE_CHECKING:
    from ..plan import HostPlan, LabPlan

SERVICE_SCRIPT = "/etc/testbed/service"
LOG_DIR = "/var/log/testbed"


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: str
    mode: int = 0o644


class HostAdapter:
    """Anything that runs in a lab container."""

    software: str = ""
    kind: str = ""
    #: Logs collected into the run directory (paths inside the container).
    log_files: tuple[str, ...] = ()
    #: Directories kept on a Docker volume rather than the container's overlay
    #: filesystem: queues and mailboxes, which MTAs manage with hard links and
    #: renames (overlayfs breaks hard links on copy-up), and which must survive
    #: a stop/start of the host like a real disk.
    data_dirs: tuple[str, ...] = ()

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        """Configuration files for this host (including /etc/testbed/service)."""
        return []

    def ready_command(self, host: HostPlan) -> str | None:
        """Shell command that succeeds once the service answers; None: nothing to wait for."""
        return None

    def version_command(self) -> str | None:
        """Shell command printing the software's version (for reports and suite comparisons)."""
        return None


class MtaAdapter(HostAdapter):
    """A mail transfer agent: the interface Postfix, Exim and Sendmail implement."""

    kind = "mta"
    #: The MTA's log, parsed by ``parse_log``.
    mail_log: str = ""

    def flush_command(self) -> str:
        """Retry every queued message now, ignoring retry timers and host caches."""
        raise NotImplementedError

    def queue_command(self) -> str:
        raise NotImplementedError

    def parse_queue(self, output: str) -> list[QueueEntry]:
        raise NotImplementedError

    def parse_log(self, text: str, host: str) -> list[MailEvent]:
        raise NotImplementedError

    def reset_command(self) -> str:
        """Empty the queue and forget retry state."""
        raise NotImplementedError

    def mailbox_path(self, domain: str, user: str) -> str | None:
        """Where this MTA stores a local mailbox (Maildir), if it stores mailboxes itself."""
        return None

    def mailbox_command(self, domain: str, user: str) -> str | None:
        path = self.mailbox_path(domain, user)
        return maildir_dump_command(path) if path else None

    def parse_mailbox(self, output: str) -> list[MailboxMessage]:
        return parse_maildir_dump(output)


def roles_summary(host: HostPlan) -> str:
    """One line for a config file's header: what this host does in the lab."""
    roles = host.roles
    parts = []
    if roles.submission_for:
        parts.append("outbound relay for " + ", ".join(roles.submission_for))
    if roles.local_domains:
        parts.append("mailboxes of " + ", ".join(d.name for d in roles.local_domains))
    if roles.relay_domains:
        parts.append("backup MX for " + ", ".join(roles.relay_domains))
    return "; ".join(parts) or "no mail role"


def log_lines(text: str, host: str, line_re: re.Pattern[str]) -> Iterator[tuple[re.Match[str], dict[str, Any]]]:
    """Each log line the MTA's line format matches, with the fields every event shares.

    ``line_re`` must have a ``time`` group; ``seq`` (the line's position) orders
    events of one host, since MTA timestamps are too coarse for that.
    """
    for seq, line in enumerate(text.splitlines()):
        m = line_re.match(line)
        if m:
            yield m, {"host": host, "seq": seq, "time": m["time"], "line": line}
