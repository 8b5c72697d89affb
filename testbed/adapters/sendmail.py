"""Sendmail (Debian sendmail-bin): templates, queue, log parsing.

Log format (syslog via rsyslog, RSYSLOG_FileFormat, LogLevel 14):
``2026-11-29T07:30:41.123456+00:00 relay.skimbee.net sendmail[92]: 6AT7Ufni000090: to=<u@d>, delay=00:00:00,
xdelay=00:00:00, mailer=esmtp, pri=30164, relay=mx10.brainbird.nl. [198.18.1.10], dsn=5.1.1,
reply=550 5.1.1 <u@d>... User unknown, stat=User unknown``

Sendmail does not log the Message-ID of a bounce it generates, only
``ORIGQID: BOUNCEQID: DSN: reason``. The Message-ID is Sendmail's default
``<$t.$i@$j>``: the UTC minute the bounce was made, its queue id and the host's
FQDN, all on that line. The parser rebuilds it there, so the bounce can be
followed like any other message.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from ..events import Kind, MailEvent, QueueEntry, ServerConnection
from ..templating import render
from .base import (
    LOG_DIR,
    SERVICE_SCRIPT,
    MtaAdapter,
    RenderedFile,
    iso_epoch,
    log_lines,
    normalise_address,
    queue_id_in_reply,
    roles_summary,
)

if TYPE_CHECKING:
    from ..plan import HostPlan, IPNetwork, LabPlan

LMTP_MAILER = "lmtptcp"
QUEUE_DIR = "/var/spool/mqueue"
_QF_MARK = "@@qf "

_LINE = re.compile(
    r"^(?P<time>\d{4}-\d\d-\d\dT\S+) (?P<fqdn>\S+) [\w.-]+\[\d+\]: (?P<msg>.*)$"
)
_QID = re.compile(r"^(?P<qid>[0-9A-Za-z]{14}): (?P<rest>.*)$")
_FROM = re.compile(
    r"^from=<?(?P<from>[^>,]*)>?, size=\d+, class=-?\d+, nrcpts=(?P<nrcpts>\d+)"
    r"(?:, msgid=(?P<msgid><[^>]*>|[^,]*))?.*?(?:, relay=(?P<relay>.*))?$"
)
_TO = re.compile(r"^to=(?P<to>.*?), (?:.*?, )?delay=")
_FIELD = {
    "mailer": re.compile(r", mailer=(?P<v>[^,]+)"),
    "relay": re.compile(r", relay=(?P<v>[^,]+)"),
    "dsn": re.compile(r", dsn=(?P<v>[\d.]+)"),
    "reply": re.compile(r", reply=(?P<v>.*?), stat="),
    "stat": re.compile(r", stat=(?P<v>.*)$"),
}
_PEER = re.compile(r"^(?:\S+@)?(?P<name>[^\s\[]*)\s*(?:\[(?P<addr>[^\]]+)\])?")
# LogLevel 14 logs every connection: "NOQUEUE: connect from NAME [ADDR]" (no port; times in microseconds).
_DAEMON_CONNECT = re.compile(r"^NOQUEUE: connect from (?:\S+ )?\[(?P<addr>[^\]]+)\]")
_NOTIFY = re.compile(
    r"^(?P<new>[0-9A-Za-z]{14}): (?P<what>DSN|return to sender|postmaster notify|sender notify): (?P<reason>.*)$"
)
_REJECT = re.compile(
    r"^ruleset=check_rcpt, arg1=<?(?P<to>[^>,]*)>?, relay=(?P<relay>.*?), "
    r"reject=(?P<code>\d{3}) (?P<dsn>\d\.\d+\.\d+) (?P<text>.*)$"
)
_CONNECT = re.compile(r"^makeconnection \((?P<name>\S+) \[(?P<addr>[^\]]+)\]\.\d+ \(\d+\)\) failed: (?P<err>.*)$")
_EXPIRED = "Cannot send message for "

#: Mailers whose "Sent" means "in a mailbox" (local files, Dovecot over LMTP).
_MAILBOX_MAILERS = {"local", "*file*", LMTP_MAILER}
#: The address family of each single-family stack, as Sendmail names it.
_CLIENT_FAMILY = {"ipv4": "inet", "ipv6": "inet6"}


class SendmailAdapter(MtaAdapter):
    software = "sendmail"
    image = "sendmail"
    mail_log = f"{LOG_DIR}/mail.log"
    reply_pattern = re.compile(r"(?:^|\s)(?P<id>[0-9A-Za-z]{10,20}) Message accepted for delivery")
    data_dirs = (QUEUE_DIR, "/var/spool/mqueue-client", "/var/mail")

    # --- configuration ---------------------------------------------------------

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        family = _CLIENT_FAMILY.get(host.stack)
        ctx = {
            "host": host,
            "timing": plan.timing,
            "roles_summary": roles_summary(host),
            "lmtp_domains": [d for d in host.roles.local_domains if d.mailstore],
            "client_family": family,
            "client_address": host.addresses(host.stack)[0] if family else None,
            "connect_keys": [access_key(net) for net in host.roles.relay_networks],
        }
        relay_domains = [*host.roles.relay_domains, *(d.name for d in host.roles.local_domains)]
        return [
            RenderedFile("/etc/mail/sendmail.mc", render("sendmail/sendmail.mc.j2", **ctx)),
            RenderedFile("/etc/mail/access", render("sendmail/access.j2", **ctx)),
            # Domains go to their mailstore by name: Sendmail resolves it per family like an MX.
            RenderedFile(
                "/etc/mail/mailertable",
                "".join(f"{d.name}\t{LMTP_MAILER}:[{d.mailstore}]\n" for d in ctx["lmtp_domains"]),
            ),
            RenderedFile("/etc/mail/relay-domains", "".join(f"{d}\n" for d in relay_domains)),
            # Double bounces go to the postmaster: a file on this host (Debian's
            # local mailer, sensible-mda, is not installed).
            RenderedFile("/etc/aliases", "mailer-daemon: postmaster\npostmaster: root\nroot: /var/mail/root\n"),
            RenderedFile("/etc/mailname", host.fqdn + "\n"),
            RenderedFile(SERVICE_SCRIPT, render("sendmail/service.j2", **ctx), 0o755),
        ]

    def version_command(self) -> str:
        # "Version 8.17.1.9" is the first line of the address-test mode's banner.
        return "sendmail -d0.1 -bt < /dev/null 2>/dev/null | sed -n 's/^Version //p' | head -1"

    def ready_command(self, host: HostPlan) -> str:
        # Every own address plus loopback listens once the daemon is up.
        listeners = len(host.addresses()) + 1
        return f"[ \"$(ss -Hltn 'sport = :25' | grep -c LISTEN)\" -ge {listeners} ]"

    # --- queue -------------------------------------------------------------------

    def flush_command(self) -> str:
        # One queue run over everything that treats every host's cached status
        # as expired (purgestat, -bH, only drops entries that already are), so a
        # peer that came back is connected to now. It runs in the background;
        # settle follows it in the queue and the log.
        return "sendmail -OTimeout.hoststatus=0s -q"

    def queue_command(self) -> str:
        return "tb-queue"

    def parse_queue(self, output: str) -> list[QueueEntry]:
        """tb-queue's output: "@@qf ID locked|idle", then that qf file's envelope lines."""
        entries: list[QueueEntry] = []
        for block in output.split(_QF_MARK)[1:]:
            head, *lines = block.splitlines()
            qid, _, lock = head.strip().partition(" ")
            fields: dict[str, list[str]] = {}
            for line in lines:
                if line[:1] in ("N", "M", "S", "R"):
                    fields.setdefault(line[0], []).append(line[1:])
            sender = fields.get("S", [""])[0].strip("<>")
            tries, status = fields.get("N"), fields.get("M")
            reason = status[0] if status else None
            entries.append(
                QueueEntry(
                    queue_id=qid,
                    state=_queue_state(lock == "locked", int(tries[0]) if tries else None, reason),
                    sender="" if sender == "MAILER-DAEMON" else sender,
                    recipients=tuple(r.split(":", 1)[-1].strip("<>") for r in fields.get("R", [])),
                    reason=reason,
                )
            )
        return entries

    # --- log ---------------------------------------------------------------------

    def parse_connections(self, text: str, host: str) -> list[ServerConnection]:
        out = []
        for m, base in log_lines(text, host, _LINE):
            c = _DAEMON_CONNECT.match(m["msg"])
            if c:
                out.append(ServerConnection(host, normalise_address(c["addr"]), None, iso_epoch(m["time"]),
                                            m["time"], base["line"]))
        return out

    def parse_log(self, text: str, host: str) -> list[MailEvent]:
        events: list[MailEvent] = []
        for m, base in log_lines(text, host, _LINE):
            q = _QID.match(m["msg"])
            if not q:
                continue
            base["queue_id"] = q["qid"]
            events += _qid_events(q["rest"], m["fqdn"], base)
        return events


def access_key(net: IPNetwork) -> str:
    """The access map's Connect: key for a network (octet / colon-group prefix).

    Sendmail matches by dropping trailing octets or groups, so a prefix that
    does not end on such a boundary widens to the one before it.
    """
    if net.version == 4:
        return ".".join(str(net.network_address).split(".")[: net.prefixlen // 8])
    groups = [format(int(g, 16), "x") for g in net.network_address.exploded.split(":")]
    return "IPv6:" + ":".join(groups[: net.prefixlen // 16])


def normalise_address(addr: str) -> str:
    """``IPv6:2001:db8:1:0:0:0:0:25`` (Sendmail's uncompressed form) -> ``2001:db8:1::25``."""
    bare = addr[len("IPv6:"):] if addr[:5].lower() == "ipv6:" else addr
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        return addr


def _queue_state(locked: bool, tries: int | None, reason: str | None) -> str:
    """active: being delivered or not tried yet; deferred: waiting for the next queue run."""
    if locked:
        return "active"
    if tries is None:  # the qf file went away while it was read: go by the status line
        return "deferred" if reason else "active"
    return "deferred" if tries else "active"


def _peer(relay: str) -> tuple[str | None, str | None]:
    """``mx10.brainbird.nl. [IPv6:2001:db8:...]`` -> (name without the root dot, compressed address)."""
    p = _PEER.match(relay.strip())
    if not p:
        return None, None
    name = p["name"].strip("[]").rstrip(".") or None
    return name, normalise_address(p["addr"]) if p["addr"] else None


def _qid_events(rest: str, fqdn: str, base: dict) -> list[MailEvent]:
    if rest.startswith("from="):
        return _from_events(rest, base)
    if rest.startswith("to="):
        return _delivery_events(rest, base)
    n = _NOTIFY.match(rest)
    if n:
        return _notify_events(n, fqdn, base)
    r = _REJECT.match(rest)
    if r:
        name, addr = _peer(r["relay"])
        return [MailEvent(
            Kind.REJECTED,
            recipient=r["to"],
            relay_name=name,
            relay_address=addr,
            status=r["dsn"],
            reason=f"{r['code']} {r['dsn']} {r['text']}",
            **base,
        )]
    c = _CONNECT.match(rest)
    if c:
        name, _ = _peer(c["name"])
        return [MailEvent(
            Kind.NOTE, relay_name=name, relay_address=normalise_address(c["addr"]), reason=c["err"], **base
        )]
    if rest.startswith("done;"):
        return [MailEvent(Kind.REMOVED, reason=rest, **base)]
    return []


def _from_events(rest: str, base: dict) -> list[MailEvent]:
    f = _FROM.match(rest)
    if not f:
        return []
    if f["nrcpts"] == "0":  # every recipient refused: nothing was taken in
        return [MailEvent(Kind.SENDER, sender=f["from"], **base)]
    name, addr = _peer(f["relay"] or "")
    events = [MailEvent(Kind.RECEIVED, sender=f["from"], relay_name=name, relay_address=addr, **base)]
    if f["msgid"]:
        events.append(MailEvent(Kind.MESSAGE_ID, message_id=f["msgid"].strip(), **base))
    return events


def _delivery_events(rest: str, base: dict) -> list[MailEvent]:
    t = _TO.match(rest)
    if not t:
        return []
    fields = {k: (m["v"] if (m := rx.search(rest)) else None) for k, rx in _FIELD.items()}
    stat, dsn, reply = fields["stat"] or "", fields["dsn"], fields["reply"]
    name, addr = _peer(fields["relay"] or "")
    if stat.startswith("Sent"):
        kind = Kind.DELIVERED if fields["mailer"] in _MAILBOX_MAILERS else Kind.RELAYED
    elif stat == "discarded":  # a message discarded (access map, milter): one line per recipient
        kind = Kind.DISCARDED
    elif dsn and dsn.startswith("4"):
        kind = Kind.DEFERRED
    elif dsn and dsn.startswith("5"):
        kind = Kind.BOUNCED
    else:
        kind = Kind.NOTE
    # "Sent (<the receiver's reply>)"
    next_qid = queue_id_in_reply(stat[len("Sent ("):-1]) if kind is Kind.RELAYED else None
    return [
        MailEvent(
            kind,
            recipient=rcpt.strip().strip("<>"),
            relay_name=name,
            relay_address=addr,
            next_queue_id=next_qid,
            status=dsn,
            reason=reply or stat,
            **base,
        )
        for rcpt in t["to"].split(",")
    ]


def _notify_events(n: re.Match[str], fqdn: str, base: dict) -> list[MailEvent]:
    """``ORIG: NEW: DSN: reason``: the bounce (or postmaster notice) NEW, made from ORIG."""
    new = n["new"]
    events = []
    if n["reason"].startswith(_EXPIRED):
        events.append(MailEvent(Kind.EXPIRED, reason=n["reason"], **base))
    events.append(MailEvent(Kind.DSN, dsn_queue_id=new, reason=f"{n['what']}: {n['reason']}", **base))
    bounce = {**base, "queue_id": new}
    events.append(MailEvent(Kind.SENDER, sender="", **bounce))
    events.append(MailEvent(Kind.MESSAGE_ID, message_id=_bounce_message_id(base["time"], new, fqdn), **bounce))
    return events


def _bounce_message_id(time: str, queue_id: str, fqdn: str) -> str:
    """Sendmail's ``<$t.$i@$j>``: $t is the UTC minute the bounce's envelope was made.

    That is the same instant as the DSN line, give or take the microseconds
    between the two, so only a bounce made at the turn of a minute could be
    named one minute late.
    """
    minute = datetime.fromisoformat(time).astimezone(UTC).strftime("%Y%m%d%H%M")
    return f"<{minute}.{queue_id}@{fqdn}>"
