"""The interfaces every adapter implements, one per role a host plays.

An adapter knows one piece of software: its role (``kind``), which image runs
it, which Debian suites it supports, which files configure it (rendered from
its templates), how to start, stop and probe its service, and, per role, how to
flush and list a queue, read its log, read a mailbox or send a message.
Adapters are pure: they return commands and parse outputs; the fabric runs
the commands inside containers.

The registry (``adapters/registry.py``) finds every concrete adapter in this
package; model, plan, render, scenario, observe and the matrix ask it, never
a list of their own.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

from ..events import MailEvent, QueueEntry, ServerConnection
from ..mailbox import maildir_dump_command

if TYPE_CHECKING:
    from ..plan import HostPlan, LabPlan

#: Written by every adapter with a service; tb-init runs "start" at each boot.
SERVICE_SCRIPT = "/etc/testbed/service"
#: Services run without CAP_NET_ADMIN (removed from their bounding set, so no
#: child gets it back): a compromised or misbehaving daemon cannot add a default
#: route or undo the lab's sealing. Only tb-init and the testbed's own execs keep it.
WITHOUT_NET_ADMIN = "setpriv --inh-caps=-net_admin --bounding-set=-net_admin --"
#: Succeeds once the service answers; tb-init and ``start_command`` poll it.
READY_SCRIPT = "/etc/testbed/ready"
LOG_DIR = "/var/log/testbed"
#: Debian releases an adapter supports unless it says otherwise.
DEFAULT_SUITES: tuple[str, ...] = ("bookworm", "trixie")


@dataclass(frozen=True)
class RenderedFile:
    path: str
    content: str
    mode: int = 0o644


class HostAdapter:
    """Anything that runs in a lab container."""

    #: The name topologies use (``software: exim``).
    software: ClassVar[str] = ""
    #: The role: mta, mailstore, dns, client or router (a topology host's ``kind``).
    kind: ClassVar[str] = ""
    #: The image (``images/<image>/``, tagged ``testbed/<image>:<suite>``).
    image: ClassVar[str] = ""
    #: The Debian suites this software's image and templates support.
    suites: ClassVar[tuple[str, ...]] = DEFAULT_SUITES
    #: The default software of its kind (one per kind; a kind with one adapter needs none).
    default: ClassVar[bool] = False
    #: Directories kept on a Docker volume rather than the container's overlay
    #: filesystem: queues and mailboxes, which MTAs manage with hard links and
    #: renames (overlayfs breaks hard links on copy-up), and which must survive
    #: a stop/start of the host like a real disk.
    data_dirs: ClassVar[tuple[str, ...]] = ()

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        """Configuration files for this host (including the service script)."""
        return []

    def ready_command(self, host: HostPlan) -> str | None:
        """Shell command that succeeds once the service answers; None: nothing to wait for."""
        return None

    def version_command(self) -> str | None:
        """Shell command printing the software's version (for reports and suite comparisons)."""
        return None

    def parse_version(self, output: str) -> str:
        """The version from ``version_command``'s output: its first line."""
        return (output.strip().splitlines() or [""])[0].strip()

    # --- the service, as tb-init and scenario steps drive it -----------------------

    def service_files(self, host: HostPlan) -> list[RenderedFile]:
        """The ready probe tb-init polls (the service script itself comes with ``files``)."""
        ready = self.ready_command(host)
        return [RenderedFile(READY_SCRIPT, f"#!/bin/sh\n{ready}\n", 0o755)] if ready else []

    def stop_command(self) -> str:
        return f"sh {SERVICE_SCRIPT} stop"

    def start_command(self) -> str:
        """Start the service (without CAP_NET_ADMIN, as tb-init does) and return once it answers."""
        return f"{WITHOUT_NET_ADMIN} sh {SERVICE_SCRIPT} start && until sh {READY_SCRIPT}; do sleep 0.05; done"


class MtaAdapter(HostAdapter):
    """A mail transfer agent: the interface Postfix, Exim and Sendmail implement."""

    kind = "mta"
    #: The MTA's log, parsed by ``parse_log``.
    mail_log: ClassVar[str] = ""
    #: The queue id inside this MTA's reply to the end of DATA ("250 ... queued as X"):
    #: a *sending* MTA logs it, so every parser asks every MTA (``queue_id_in_reply``).
    reply_pattern: ClassVar[re.Pattern[str]]
    #: Keeps mailboxes itself (``mailbox_path``); else a domain it is final for needs a mailstore.
    stores_mailboxes: ClassVar[bool] = False

    def flush_command(self) -> str:
        """Retry every queued message now, ignoring retry timers and host caches."""
        raise NotImplementedError

    def queue_command(self) -> str:
        raise NotImplementedError

    def parse_queue(self, output: str) -> list[QueueEntry]:
        raise NotImplementedError

    def parse_log(self, text: str, host: str) -> list[MailEvent]:
        raise NotImplementedError

    def parse_connections(self, text: str, host: str) -> list[ServerConnection]:
        """The SMTP connections this MTA's log says it accepted (who connected, from which port)."""
        raise NotImplementedError

    def mailbox_path(self, domain: str, user: str) -> str | None:
        """Where this MTA stores a local mailbox (Maildir); None: it delivers only to a mailstore."""
        return None

    def mailbox_command(self, domain: str, user: str) -> str | None:
        """Print every message of a mailbox this MTA stores (``mailbox.parse_maildir_dump`` reads it)."""
        path = self.mailbox_path(domain, user)
        return maildir_dump_command(path) if path else None


class MailstoreAdapter(HostAdapter):
    """A mailstore (Dovecot): holds mailboxes, takes mail over LMTP, serves IMAP and POP3."""

    kind = "mailstore"

    def mailbox_command(self, domain: str, user: str) -> str:
        """Print every message of a mailbox, read inside the store, in the Maildir dump's format."""
        raise NotImplementedError


#: Resolver behaviour models a client step can name -> the model's name for ``tb-resolver-model``.
RESOLVER_MODELS = {"macos-10.6-model": "macos-10.6"}
#: Real resolver software other than the client's own glibc -> its program in the client image.
RESOLVER_PROGRAMS = {"c-ares": "tb-resolve-cares"}


@dataclass(frozen=True)
class ClientRequest:
    """What a client step asks a mail client to do; the client resolves ``server`` itself."""

    action: str  # submit | fetch | connect
    protocol: str  # smtp | imap | pop3
    server: str
    port: int
    #: Per connection attempt, where the client has such a setting.
    timeout_s: float
    family: str = "any"  # any | ipv4 | ipv6
    sender: str = ""
    recipients: tuple[str, ...] = ()
    message_id: str = ""
    subject: str = ""
    helo: str = ""
    user: str = ""
    password: str = ""


@dataclass(frozen=True)
class ClientOutcome:
    """What the client's own output says about the action."""

    ok: bool  # message accepted, mailbox listed, or connected
    reply: str | None  # the decisive server reply or the client's error line
    detail: str = ""


class ClientAdapter(HostAdapter):
    """A mail client: submits, fetches or just connects, resolving the server's name itself."""

    kind = "client"
    image = "client"
    #: What this client can do (``submit``, ``fetch``, ``connect``) and over which protocols.
    actions: ClassVar[frozenset[str]] = frozenset()
    protocols: ClassVar[frozenset[str]] = frozenset()
    #: The address families a step can restrict it to ("any": no restriction).
    families: ClassVar[frozenset[str]] = frozenset({"any", "ipv4", "ipv6"})
    #: The client writes its SMTP transcript to stderr (the ``send`` step reads stdout).
    transcript_on_stderr: ClassVar[bool] = False
    #: Set on behaviour models of software that cannot run here: what is modelled ...
    model_of: ClassVar[str | None] = None
    #: ... and the cited source the model follows.
    model_source: ClassVar[str | None] = None

    def client_command(self, request: ClientRequest) -> str:
        """The client's own command line (shell-quoted), run under ``tb-trace``."""
        raise NotImplementedError

    def traced_command(self, request: ClientRequest, resolver: str = "glibc", repeat: int = 1) -> str:
        """The client's command under the client image's ``tb-trace`` (its lookups and handshakes recorded).

        With another resolver than glibc, ``tb-trace`` first runs it (a model, or
        real software such as c-ares; real queries to the lab DNS server) and the
        client's getaddrinfo then returns its answer. ``repeat``: that many runs in a row.
        """
        args = ["tb-trace", "--ports", str(request.port)]
        if resolver in RESOLVER_MODELS:
            args += ["--model-resolver", RESOLVER_MODELS[resolver], "--name", request.server]
        elif resolver in RESOLVER_PROGRAMS:
            args += ["--resolve-with", RESOLVER_PROGRAMS[resolver], "--name", request.server]
        if repeat > 1:
            args += ["--repeat", str(repeat)]
        return " ".join(shlex.quote(a) for a in [*args, "--", "sh", "-c", self.client_command(request)])

    def outcome(self, rc: int, stdout: str, stderr: str) -> ClientOutcome:
        """Parse the client's real output."""
        raise NotImplementedError

    # The scenario's ``send`` step (a submission that must be accepted) uses these.

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
        """The submission as a command whose stdout holds the client's transcript."""
        request = ClientRequest("submit", "smtp", server, 25, float(timeout_s), family, sender, tuple(recipients),
                                message_id, subject, helo)
        command = self.client_command(request)
        return f"{{ {command}; }} 2>&1" if self.transcript_on_stderr else command

    def last_reply(self, output: str) -> str | None:
        """The server's reply to the end of DATA, from the client's output."""
        raise NotImplementedError


class DnsAdapter(HostAdapter):
    """The lab's DNS server: a query log, and live rules changed by command."""

    kind = "dns"
    query_log: ClassVar[str] = ""

    def control_command(self, verb: str, rules: list[dict[str, Any]] | None = None) -> str:
        raise NotImplementedError


class RouterAdapter(HostAdapter):
    """A router: forwards between segments; the plan's sysctls and routes are all it needs."""

    kind = "router"


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


def normalise_address(text: str) -> str:
    """An address as Python writes it ("IPv6:2001:db8:1:0:0:0:0:10" -> "2001:db8:1::10"); unchanged if not one."""
    try:
        return str(ipaddress.ip_address(text.removeprefix("IPv6:")))
    except ValueError:
        return text


def iso_epoch(text: str) -> float | None:
    """Epoch seconds of an ISO-8601 or "YYYY-MM-DD HH:MM:SS.fff" log time (the lab's clocks are UTC)."""
    try:
        t = datetime.fromisoformat(text.replace(" ", "T", 1))
    except ValueError:
        return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()


def queue_id_in_reply(reply: str) -> str | None:
    """The receiver's queue id in an acceptance reply, whichever MTA the receiver runs."""
    from .registry import mtas  # the registry imports every adapter module, this one's users included

    for adapter in mtas():
        m = adapter.reply_pattern.search(reply)
        if m:
            return m["id"]
    return None
