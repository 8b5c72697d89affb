"""One timeline per run: scenario steps, DNS queries, client connection attempts, server-side
connections and MTA log events, in time order (pure: the run's evidence in, entries out).

Every entry has an epoch time ``t`` and says where it comes from (``source``:
step, dns, client, capture, server, mta); MTA events carry the message they
belong to where the tracker linked them, and the SMTP sessions seen in the
captures the message whose Message-ID they carried (``message``). Written to
``timeline.jsonl`` in the run directory.

Times come from different clocks of one machine (the containers share the
host's kernel clock), at different resolutions: Postfix's log has whole
seconds and no year (the run's year is assumed), Exim milliseconds, Sendmail
and the DNS server and the captures microseconds. Entries of equal time keep the order above.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any

from .adapters.base import iso_epoch
from .clientrun import ClientResult
from .events import MailEvent, ServerConnection
from .pcapread import SeenConnection, summary
from .track import History

_SOURCES = ("step", "dns", "client", "capture", "server", "mta")
_FRACTION = re.compile(r"\d\d:\d\d:\d\d[.,]\d")


@dataclass(frozen=True)
class Entry:
    t: float
    source: str  # step | dns | client | capture | server | mta
    host: str
    text: str
    message: str | None = None
    #: 1 where the source has whole seconds only (Postfix's log): the event lies within [t, t + 1).
    resolution_s: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["t"] = round(self.t, 6)
        out["time"] = datetime.fromtimestamp(self.t, timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        return {k: v for k, v in out.items() if v is not None}


def log_time(text: str, year: int) -> float | None:
    """Epoch seconds of an MTA log time: ISO (Sendmail), "YYYY-MM-DD HH:MM:SS.fff" (Exim), "Dec 02 06:03:17" (Postfix)."""
    epoch = iso_epoch(text.strip())
    if epoch is not None:
        return epoch
    try:
        t = datetime.strptime(f"{year} {' '.join(text.split())}", "%Y %b %d %H:%M:%S")
    except ValueError:
        return None
    return t.replace(tzinfo=timezone.utc).timestamp()


def _resolution(text: str) -> int | None:
    """1 for a time of whole seconds ("Dec 02 06:03:17"), None for one with a fraction."""
    return None if _FRACTION.search(text) else 1


def _queue_owners(histories: Mapping[str, History]) -> dict[tuple[str, str], str]:
    """(host, queue id) -> the message (or its bounce) that queue entry belongs to."""
    out: dict[tuple[str, str], str] = {}
    for name, hist in histories.items():
        for h in [hist, *hist.dsns]:
            for hop in h.hops:
                out.setdefault((hop.host, hop.queue_id), h.name if h is not hist else name)
    return out


def build(
    steps: Iterable[Mapping[str, Any]],
    dns_queries: Iterable[Mapping[str, Any]],
    clients: Iterable[ClientResult],
    connections: Iterable[ServerConnection],
    events: Iterable[MailEvent],
    histories: Mapping[str, History],
    dns_host: str,
    year: int,
    captured: Iterable[SeenConnection] = (),
    message_ids: Mapping[str, str] | None = None,
    host_of: Callable[[str], str | None] = lambda _address: None,
) -> list[Entry]:
    out: list[Entry] = []
    names = {mid: name for name, mid in (message_ids or {}).items()}
    for seen in captured:
        c = seen.connection
        message = next((names[m] for m in c.message_ids if m in names), None)
        if message and c.report:
            message = f"{message} bounce"
        text = f"{summary(c)} (seen on {', '.join(seen.segments)})"
        out.append(Entry(c.started, "capture", host_of(c.client) or c.client, text, message))
    for step in steps:
        if step.get("started_at"):
            out.append(Entry(float(step["started_at"]), "step", "", f"step {step['index'] + 1}: {step['summary']}"))
    for q in dns_queries:
        t = log_time(str(q.get("wall", "")).removesuffix("Z"), year)
        if t is None:
            continue
        answer = ", ".join(q.get("answers") or []) or q.get("rcode", "")
        rule = f" (rule {q['rule']})" if q.get("rule") else ""
        out.append(Entry(t, "dns", dns_host, f"{q.get('client')} asked {q.get('name')} {q.get('type')}: {answer}{rule}"))
    for r in clients:
        for a in r.attempts:
            where = r.hosts_by_address.get(a.address, "?")
            out.append(Entry(a.started, "client", r.host,
                             f"{r.id}: {a.source or '?'} -> {a.address} ({where}) port {a.port}: {a.result}"))
    for c in connections:
        t = c.time if c.time is not None else log_time(c.time_text, year)
        if t is not None:
            who = f"[{c.client_address}]" if ":" in c.client_address else c.client_address
            port = f":{c.client_port}" if c.client_port else ""
            out.append(Entry(t, "server", c.host, f"connection from {who}{port}", None, _resolution(c.time_text)))
    owners = _queue_owners(histories)
    for e in events:
        t = log_time(e.time, year)
        if t is None:
            continue
        message = owners.get((e.host, e.queue_id or ""))
        out.append(Entry(t, "mta", e.host, e.line.split(": ", 1)[-1] if e.line else str(e.kind), message,
                         _resolution(e.time)))
    rank = {s: i for i, s in enumerate(_SOURCES)}
    return sorted(out, key=lambda x: (x.t, rank[x.source]))


def jsonl(entries: Iterable[Entry]) -> str:
    return "".join(json.dumps(e.to_dict()) + "\n" for e in entries)
