"""Exim (Debian exim4-daemon-light): templates, queue, log parsing.

Main log format (``log_file_path``, ``+millisec``), one line per event, the
message id after the time (16 characters in 4.96, 23 from 4.97 on):
``2026-11-29 07:22:32.829 1xXZF0-00001I-0s == u@d R=dnslookup T=remote_smtp defer (101): Network is unreachable``
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

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
    from ..plan import HostPlan, LabPlan

EXIM_LOG_DIR = f"{LOG_DIR}/exim"
#: Transport names of the template. Exim stores no mailboxes itself (the model
#: requires a mailstore): a delivery over the LMTP transport is final.
REMOTE_TRANSPORT = "remote_smtp"
LMTP_TRANSPORT = "lmtp_delivery"
#: images/exim/tb-exim: queue listing with delivery state, flush.
_HELPER = "/usr/local/sbin/tb-exim"

_ID = r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6,11}-[0-9A-Za-z]{2,4}"
_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (?P<msg>.*)$")
_QID = re.compile(rf"^(?P<qid>{_ID}) (?P<rest>.*)$")
# H=name [addr]:port, H=(helo) [addr], H=name (helo) [addr]; the name may be an IP
# literal. A "*" after the address: the delivery reused an open connection.
_HOST = re.compile(r"\bH=(?P<name>[^\s(\[]+)?(?: ?\((?P<helo>[^)]*)\))? ?\[(?P<addr>[^\]]+)\](?::\d+)?\*?")
_ARRIVAL = re.compile(rf"^<= (?P<sender>\S+)(?: R=(?P<ref>{_ID}))?(?P<fields>.*)$")
_ADDRESS = re.compile(r"^(?P<rcpt>[^\s:]+)(?: <(?P<orig>[^>]*)>)?(?P<rest>.*)$")
_TRANSPORT = re.compile(r" T=(?P<name>\S+)")
_MESSAGE_ID = re.compile(r" id\*?=(?P<id>\S+)")
_CONFIRMATION = re.compile(r' C="(?P<reply>(?:[^"\\]|\\.)*)"')
_QUOTED = re.compile(r"\\(.)")
_DEFER = re.compile(r" defer \(-?\d+\)(?P<reason>.*)$")
# The local interface, between a delivery's host and its error text.
_INTERFACE = re.compile(r" I=\[[^\]]*\](?::\d+)?")
_STATUS = re.compile(r"\b[245]\d\d[ -](?P<status>[245]\.\d{1,3}\.\d{1,3})\b")
_REJECT = re.compile(
    r"F=<(?P<from>[^>]*)> (?P<temp>temporarily )?rejected RCPT <(?P<to>[^>]*)>: (?P<reason>.*)$"
)
# +smtp_connection: "SMTP connection from [ADDR]:PORT I=[...]:25 (TCP/IP connection count = N)" when
# the connection comes in; its end ("... closed by QUIT", "... lost") repeats the start and is not counted.
_SMTP_CONNECTION = re.compile(
    r"^SMTP connection from (?:[^\s(\[]+ )?(?:\([^)]*\) )?\[(?P<addr>[^\]]+)\](?::(?P<port>\d+))?"
    r".* \(TCP/IP connection count = \d+\)$"
)
_DISCARD = re.compile(r"^(?P<rcpt>\S+): error ignored$")

#: Fields every event of one log line shares (host, seq, time, line).
_Base = dict[str, Any]

_QUEUE_HEAD = re.compile(
    rf"^\s*\d+[smhdw]\s+\S+\s+(?P<id>{_ID})\s+<(?P<sender>[^>]*)>(?P<frozen>\s+\*\*\* frozen \*\*\*)?"
)
_QUEUE_STATE = re.compile(rf"^testbed-queue (?P<id>{_ID}) locked=(?P<locked>[01]) tried=(?P<tried>[01]) last=(?P<last>.*)$")


class EximAdapter(MtaAdapter):
    software = "exim"
    image = "exim"
    mail_log = f"{EXIM_LOG_DIR}/mainlog"
    reply_pattern = re.compile(r"\bOK id=(?P<id>[\w-]+)")
    data_dirs = ("/var/spool/exim4",)

    # --- configuration ---------------------------------------------------------

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        timing = plan.timing
        ctx = {
            "host": host,
            "timing": timing,
            "roles_summary": roles_summary(host),
            "log_dir": EXIM_LOG_DIR,
            "remote_transport": REMOTE_TRANSPORT,
            "lmtp_transport": LMTP_TRANSPORT,
            "queue_interval": timing.retry / 2,
        }
        return [
            RenderedFile("/etc/exim4/exim4.conf", render("exim/exim4.conf.j2", **ctx)),
            RenderedFile("/etc/mailname", host.fqdn + "\n"),
            RenderedFile(SERVICE_SCRIPT, render("exim/service.j2", **ctx), 0o755),
        ]

    def ready_command(self, host: HostPlan) -> str:
        return "ss -Hltn 'sport = :25' | grep -q LISTEN"

    def version_command(self) -> str:
        return "exim4 -bV 2>/dev/null | sed -n '1s/^Exim version \\([^ ]*\\).*/\\1/p'"

    # --- queue -------------------------------------------------------------------

    def flush_command(self) -> str:
        return f"{_HELPER} flush"

    def queue_command(self) -> str:
        return f"{_HELPER} queue"

    def parse_queue(self, output: str) -> list[QueueEntry]:
        """`exim -bp` blocks, then the helper's state line per message.

        Exim has no active queue: a message is ``active`` while a delivery
        process holds it or before its first attempt (it is about to be
        tried), ``deferred`` once tried and waiting, ``frozen`` when Exim
        stopped trying it.
        """
        heads: dict[str, re.Match[str]] = {}
        recipients: dict[str, list[str]] = {}
        states: dict[str, re.Match[str]] = {}
        current: str | None = None
        for line in output.splitlines():
            if (s := _QUEUE_STATE.match(line)) is not None:
                states[s["id"]] = s
                current = None
            elif (h := _QUEUE_HEAD.match(line)) is not None:
                current = h["id"]
                heads[current] = h
                recipients[current] = []
            elif current is not None and line.strip() and not line.lstrip().startswith(("D ", "+D ")):
                recipients[current].append(line.strip())
        entries = []
        for qid, head in heads.items():
            s = states.get(qid)
            if head["frozen"]:
                state = "frozen"
            elif s is None or s["locked"] == "1" or s["tried"] == "0":
                state = "active"  # no state line: it came or went while listing
            else:
                state = "deferred"
            entries.append(
                QueueEntry(
                    queue_id=qid,
                    state=state,
                    sender=head["sender"],
                    recipients=tuple(recipients[qid]),
                    reason=(s["last"] or None) if s else None,
                )
            )
        return entries

    # --- log ---------------------------------------------------------------------

    def parse_connections(self, text: str, host: str) -> list[ServerConnection]:
        out = []
        for m, base in log_lines(text, host, _LINE):
            c = _SMTP_CONNECTION.match(m["msg"])
            if c:
                out.append(ServerConnection(host, normalise_address(c["addr"]),
                                            int(c["port"]) if c["port"] else None, iso_epoch(m["time"]),
                                            m["time"], base["line"]))
        return out

    def parse_log(self, text: str, host: str) -> list[MailEvent]:
        events: list[MailEvent] = []
        for m, base in log_lines(text, host, _LINE):
            q = _QID.match(m["msg"])
            if q is None:
                rej = _REJECT.search(m["msg"])
                if rej:
                    events.append(_reject_event(m["msg"], rej, base))
                continue
            events += _qid_events(q["qid"], q["rest"], base)
        return events


def _host(text: str) -> tuple[str | None, str | None]:
    h = _HOST.search(text)
    if not h:
        return None, None
    return h["name"] or h["helo"], h["addr"]


def _reason(text: str) -> str:
    """The error text of a delivery line, without the host and interface fields."""
    return _INTERFACE.sub("", _HOST.sub("", text)).strip().lstrip(":").strip()


def _unquote_reply(quoted: str) -> str:
    """C="..." quotes backslashes and double quotes; inside, a line break of a
    multi-line reply is the two characters backslash and n."""
    return _QUOTED.sub(r"\1", quoted).replace("\\n", "\n")


def _status(reason: str) -> str | None:
    s = _STATUS.search(reason)
    return s["status"] if s else None


def _reject_event(msg: str, rej: re.Match[str], base: _Base) -> MailEvent:
    name, addr = _host(msg)
    return MailEvent(
        Kind.REJECTED,
        sender=rej["from"],
        recipient=rej["to"],
        relay_name=name,
        relay_address=addr,
        status=_status(rej["reason"]),
        reason=("temporarily rejected: " if rej["temp"] else "") + rej["reason"],
        **base,
    )


def _qid_events(qid: str, rest: str, base: _Base) -> list[MailEvent]:
    if rest.startswith("<= "):
        return _arrival_events(qid, rest, base)
    flag, _, after = rest.partition(" ")
    if flag in ("=>", "->", "==", "**"):
        a = _ADDRESS.match(after)
        if a:
            return [_delivery_event(flag, qid, a, base)]
    if rest.startswith("Frozen"):
        return [MailEvent(Kind.FROZEN, queue_id=qid, reason=rest, **base)]
    d = _DISCARD.match(rest)
    if d:
        return [MailEvent(Kind.DISCARDED, queue_id=qid, recipient=d["rcpt"], reason=rest, **base)]
    if rest == "Completed":
        return [MailEvent(Kind.REMOVED, queue_id=qid, **base)]
    if rest.startswith("H="):
        # A connection to one of the hosts failed; the delivery line follows.
        name, addr = _host(rest)
        return [MailEvent(Kind.NOTE, queue_id=qid, relay_name=name, relay_address=addr, reason=_reason(rest), **base)]
    if rest.startswith("Unfrozen"):
        return [MailEvent(Kind.NOTE, queue_id=qid, reason=rest, **base)]
    return []


def _arrival_events(qid: str, rest: str, base: _Base) -> list[MailEvent]:
    a = _ARRIVAL.match(rest)
    if a is None:
        return []
    sender = "" if a["sender"] == "<>" else a["sender"]
    fields = a["fields"]
    name, addr = _host(fields)
    events = []
    if a["ref"]:
        # A bounce: Exim logs the message it reports on as R=<id>.
        events.append(MailEvent(Kind.DSN, queue_id=a["ref"], dsn_queue_id=qid, reason=rest, **base))
    events.append(
        MailEvent(
            Kind.RECEIVED,
            queue_id=qid,
            sender=sender,
            relay_name=name,
            relay_address=addr,
            reason=None if addr else "local submission",
            **base,
        )
    )
    mid = _MESSAGE_ID.search(fields)
    if mid:
        events.append(MailEvent(Kind.MESSAGE_ID, queue_id=qid, message_id=f"<{mid['id']}>", **base))
    return events


def _delivery_event(flag: str, qid: str, a: re.Match[str], base: _Base) -> MailEvent:
    # "=> final <original>": the original is the envelope recipient the message came with.
    recipient = a["orig"] or a["rcpt"]
    rest = a["rest"]
    name, addr = _host(rest)
    if flag in ("=>", "->"):
        c = _CONFIRMATION.search(rest)
        reply = _unquote_reply(c["reply"]) if c else ""
        t = _TRANSPORT.search(rest[: c.start()] if c else rest)
        final = t is not None and t["name"] == LMTP_TRANSPORT
        return MailEvent(
            Kind.DELIVERED if final else Kind.RELAYED,
            queue_id=qid,
            recipient=recipient,
            relay_name=name,
            relay_address=addr,
            next_queue_id=None if final else queue_id_in_reply(reply),
            status=_status(reply),
            reason=reply or None,
            **base,
        )
    if flag == "==":
        d = _DEFER.search(rest)
        reason = _reason(d["reason"] if d else rest)
        kind = Kind.DEFERRED
    else:
        _, _, reason = rest.partition(": ")
        reason = _reason(reason)
        kind = Kind.EXPIRED if reason.startswith("retry timeout exceeded") else Kind.BOUNCED
    return MailEvent(
        kind,
        queue_id=qid,
        recipient=recipient,
        relay_name=name,
        relay_address=addr,
        status=_status(reason),
        reason=reason,
        **base,
    )
