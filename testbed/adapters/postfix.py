"""Postfix: templates, queue, log parsing.

Log format (``maillog_file``, postlogd):
``Nov 29 06:55:03 mx20 postfix/smtp[107]: 4F3A1: to=<u@d>, relay=h[a]:25, ..., dsn=4.4.1, status=deferred (...)``
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from ..events import Kind, MailEvent, QueueEntry, ServerConnection
from ..templating import render
from .base import (
    iso_epoch,
    normalise_address,
    LOG_DIR,
    SERVICE_SCRIPT,
    MtaAdapter,
    RenderedFile,
    log_lines,
    queue_id_in_reply,
    roles_summary,
)

if TYPE_CHECKING:
    from ..plan import HostPlan, LabPlan

_LINE = re.compile(
    r"^(?P<time>\w{3} +\d+ [\d:.]+|\d{4}-\d\d-\d\dT\S+) (?P<host>\S+) "
    r"(?P<prog>[\w.-]+)/(?P<service>[\w/.-]+)\[(?P<pid>\d+)\]: (?P<msg>.*)$"
)
_QID = re.compile(r"^(?P<qid>[0-9A-Za-z]{6,}): (?P<rest>.*)$")
_DELIVERY = re.compile(
    r"^to=<(?P<to>[^>]*)>,(?: orig_to=<[^>]*>,)? relay=(?P<relay>[^,]*), .*?"
    r"dsn=(?P<dsn>[\d.]+), status=(?P<status>\w+) \((?P<reason>.*)\)$"
)
_RELAY = re.compile(r"^(?P<name>[^\[]*)\[(?P<addr>[^\]]*)\](?::\d+)?$")
_CLIENT = re.compile(r"^client=(?P<name>[^\[]*)\[(?P<addr>[^\]]*)\]")
_REJECT = re.compile(
    r"reject: RCPT from (?P<name>[^\[]*)\[(?P<addr>[^\]]*)\](?::\d+)?: (?P<code>\d{3}) (?P<dsn>[\d.]+) "
    r"(?P<text>.*?); from=<(?P<from>[^>]*)> to=<(?P<to>[^>]*)>"
)
_DSN = re.compile(r"^(?:sender|postmaster) (?:non-delivery|delivery status|delay) notification: (?P<new>\w+)")
#: smtpd's "connect from NAME[ADDR]:PORT" (the port: smtpd_client_port_logging, set in main.cf).
_SMTPD_CONNECT = re.compile(r"^connect from (?P<name>[^\[]*)\[(?P<addr>[^\]]*)\](?::(?P<port>\d+))?$")
_CONNECT = re.compile(r"^connect to (?P<name>[^\[]*)\[(?P<addr>[^\]]*)\]:\d+: (?P<err>.*)$")

#: Delivery agents whose "sent" means "in a mailbox", not "handed to another MTA".
_MAILBOX_AGENTS = {"local", "virtual", "lmtp", "pipe"}


class PostfixAdapter(MtaAdapter):
    software = "postfix"
    image = "postfix"
    default = True
    mail_log = f"{LOG_DIR}/mail.log"
    reply_pattern = re.compile(r"queued as (?P<id>[0-9A-Za-z]+)")
    stores_mailboxes = True
    data_dirs = ("/var/spool/postfix", "/var/mail")

    # --- configuration ---------------------------------------------------------

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        ctx = {
            "host": host,
            "timing": plan.timing,
            "inet_protocols": {"ipv4": "ipv4", "ipv6": "ipv6", "dual": "all"}[host.stack],
            "roles_summary": roles_summary(host),
            "lmtp_domains": [d for d in host.roles.local_domains if d.mailstore],
        }
        return [
            RenderedFile("/etc/postfix/main.cf", render("postfix/main.cf.j2", **ctx)),
            RenderedFile("/etc/postfix/vmailbox", render("postfix/vmailbox.j2", **ctx)),
            RenderedFile(
                "/etc/postfix/transport",
                "".join(f"{d.name} lmtp:inet:{d.mailstore}:24\n" for d in ctx["lmtp_domains"]),
            ),
            # texthash format ("key value"), read without newaliases.
            RenderedFile("/etc/aliases", "postmaster root\nmailer-daemon postmaster\n"),
            RenderedFile("/etc/mailname", host.fqdn + "\n"),
            RenderedFile(SERVICE_SCRIPT, render("postfix/service.j2", **ctx), 0o755),
        ]

    def version_command(self) -> str:
        return "postconf -h mail_version"

    def ready_command(self, host: HostPlan) -> str:
        # The service script's `master -w` returns once the master daemon has
        # initialised, and only the master opens the SMTP listener: a listener on
        # port 25 is the master running. `postfix status` said no more, cost 0.6-2 s
        # per start (postfix-script runs postconf several times) and added a line
        # to the mail log.
        return "ss -Hltn 'sport = :25' | grep -q LISTEN"

    # --- queue -------------------------------------------------------------------

    def flush_command(self) -> str:
        # postqueue -f also clears the dead-destination cache (FLUSH_DEAD).
        return "postqueue -f"

    def queue_command(self) -> str:
        return "postqueue -j"

    def parse_queue(self, output: str) -> list[QueueEntry]:
        entries = []
        for line in output.splitlines():
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue
            rcpts = item.get("recipients") or []
            reasons = [r.get("delay_reason") for r in rcpts if r.get("delay_reason")]
            entries.append(
                QueueEntry(
                    queue_id=str(item.get("queue_id", "")),
                    state=str(item.get("queue_name", "")),
                    sender=str(item.get("sender", "")),
                    recipients=tuple(str(r.get("address", "")) for r in rcpts),
                    reason=reasons[0] if reasons else None,
                )
            )
        return entries

    def mailbox_path(self, domain: str, user: str) -> str:
        return f"/var/mail/vhosts/{domain}/{user}/"

    # --- log ---------------------------------------------------------------------

    def parse_connections(self, text: str, host: str) -> list[ServerConnection]:
        out = []
        for m, base in log_lines(text, host, _LINE):
            c = _SMTPD_CONNECT.match(m["msg"]) if m["service"] == "smtpd" else None
            if c:
                # maillog_file's syslog-style time has no year: the port identifies the connection.
                out.append(ServerConnection(host, normalise_address(c["addr"]),
                                            int(c["port"]) if c["port"] else None, iso_epoch(m["time"]),
                                            m["time"], base["line"]))
        return out

    def parse_log(self, text: str, host: str) -> list[MailEvent]:
        events: list[MailEvent] = []
        pending: dict[str, list[tuple[int, str, str, dict[str, str | None]]]] = {}
        for m, base in log_lines(text, host, _LINE):
            seq, line = base["seq"], base["line"]
            msg, pid, service = m["msg"], m["pid"], m["service"]
            if msg.startswith("NOQUEUE: "):
                rej = _REJECT.search(msg)
                if rej:
                    events.append(_reject_event(rej, base, None))
                continue
            q = _QID.match(msg)
            if not q or q["qid"] in ("warning", "fatal", "panic", "error"):
                note = _note(msg)
                if note:
                    pending.setdefault(pid, []).append((seq, m["time"], line, note))
                continue
            qid, rest = q["qid"], q["rest"]
            # Connect failures and warnings come without a queue id; they belong
            # to the next message this process logs.
            for nseq, ntime, nline, fields in pending.pop(pid, []):
                events.append(
                    MailEvent(Kind.NOTE, host, nseq, ntime, qid, line=nline, **fields)  # type: ignore[arg-type]
                )
            event = _qid_event(service, qid, rest, base)
            if event is not None:
                events.append(event)
        events.sort(key=lambda e: e.seq)
        return events


def _note(msg: str) -> dict[str, str | None] | None:
    c = _CONNECT.match(msg)
    if c:
        return {"relay_name": c["name"], "relay_address": c["addr"], "reason": c["err"]}
    if msg.startswith("warning: "):
        return {"reason": msg[len("warning: "):]}
    return None


def _reject_event(rej: re.Match[str], base: dict, qid: str | None) -> MailEvent:
    return MailEvent(
        Kind.REJECTED,
        queue_id=qid,
        sender=rej["from"],
        recipient=rej["to"],
        relay_name=rej["name"],
        relay_address=rej["addr"],
        status=rej["dsn"],
        reason=f"{rej['code']} {rej['dsn']} {rej['text']}",
        **base,
    )


def _qid_event(service: str, qid: str, rest: str, base: dict) -> MailEvent | None:
    if rest.startswith("message-id="):
        mid = rest[len("message-id="):].strip()
        return MailEvent(Kind.MESSAGE_ID, queue_id=qid, message_id=mid or None, **base)
    c = _CLIENT.match(rest)
    if c:
        return MailEvent(Kind.RECEIVED, queue_id=qid, relay_name=c["name"], relay_address=c["addr"], **base)
    if rest.startswith("uid=") and " from=<" in rest:
        sender = rest.split(" from=<", 1)[1].split(">", 1)[0]
        return MailEvent(Kind.RECEIVED, queue_id=qid, sender=sender, reason="local submission", **base)
    if rest.startswith("from=<"):
        sender = rest[len("from=<"):].split(">", 1)[0]
        if "status=expired" in rest:
            return MailEvent(Kind.EXPIRED, queue_id=qid, sender=sender, reason=rest, **base)
        return MailEvent(Kind.SENDER, queue_id=qid, sender=sender, **base)
    d = _DELIVERY.match(rest)
    if d:
        return _delivery_event(service, qid, d, base)
    n = _DSN.match(rest)
    if n:
        return MailEvent(Kind.DSN, queue_id=qid, dsn_queue_id=n["new"], reason=rest, **base)
    if rest == "removed":
        return MailEvent(Kind.REMOVED, queue_id=qid, **base)
    if "notification discarded" in rest or rest.startswith("discard:"):
        return MailEvent(Kind.DISCARDED, queue_id=qid, reason=rest, **base)
    rej = _REJECT.search(rest)
    if rej:
        return _reject_event(rej, base, qid)
    return None


def _delivery_event(service: str, qid: str, d: re.Match[str], base: dict) -> MailEvent:
    relay = _RELAY.match(d["relay"])
    name = relay["name"] if relay else d["relay"]
    addr = relay["addr"] if relay else None
    status = d["status"]
    if status == "sent":
        kind = Kind.DELIVERED if service in _MAILBOX_AGENTS else Kind.RELAYED
    else:
        kind = {"deferred": Kind.DEFERRED, "bounced": Kind.BOUNCED, "expired": Kind.EXPIRED}.get(status, Kind.NOTE)
    return MailEvent(
        kind,
        queue_id=qid,
        recipient=d["to"],
        relay_name=name,
        relay_address=addr,
        next_queue_id=queue_id_in_reply(d["reason"]) if kind is Kind.RELAYED else None,
        status=d["dsn"],
        reason=d["reason"],
        **base,
    )
