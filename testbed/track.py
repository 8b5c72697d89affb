"""Message histories across hosts, from host-local events (pure).

A message is followed by its Message-ID: each host logs the queue id it gave
the message and, when it hands the message on, the receiver's reply with the
receiver's queue id. Bounces are followed the same way from the host that
generated them (the DSN event links the original queue id to the bounce's).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from .events import Kind, MailboxMessage, MailEvent, QueueEntry
from .plan import LabPlan

Node = tuple[str, str]  # (host, queue id)

_OUTCOME_KINDS = (Kind.RELAYED, Kind.DELIVERED, Kind.DEFERRED, Kind.BOUNCED, Kind.EXPIRED, Kind.FROZEN, Kind.DISCARDED)


@dataclass
class Hop:
    host: str
    queue_id: str
    outcome: str  # relayed | delivered | deferred | bounced | expired | frozen | discarded | queued | received
    next_host: str | None = None
    address: str | None = None
    reason: str | None = None
    in_queue: bool = False
    evidence: list[str] = field(default_factory=list)

    @property
    def family(self) -> str | None:
        if not self.address:
            return None
        return "ipv6" if ":" in self.address else "ipv4"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "host": self.host,
            "queue_id": self.queue_id,
            "outcome": self.outcome,
            "next_host": self.next_host,
            "address": self.address,
            "family": self.family,
            "reason": self.reason,
            "in_queue": self.in_queue,
            "evidence": self.evidence,
        }
        return {k: v for k, v in d.items() if v not in (None, [], "")}


@dataclass
class History:
    """What happened to one message (and, nested, to the bounces it caused)."""

    name: str  # scenario id, or "<id> bounce"
    message_id: str | None
    recipients: tuple[str, ...]
    hops: list[Hop] = field(default_factory=list)
    delivered_to: list[tuple[str, str]] = field(default_factory=list)  # (recipient, host)
    dsns: list[History] = field(default_factory=list)
    dsn_generated_at: list[str] = field(default_factory=list)
    state: str = "lost"

    @property
    def path(self) -> list[str]:
        return [h.host for h in self.hops]

    @property
    def delivered(self) -> bool:
        """Delivered to one of its own recipients (a postmaster copy does not count)."""
        wanted = {r.lower() for r in self.recipients}
        return any(r.lower() in wanted for r, _ in self.delivered_to)

    @property
    def dsn_delivered(self) -> bool:
        return any(d.delivered for d in self.dsns)

    @property
    def queued_at(self) -> list[str]:
        return [h.host for h in self.hops if h.in_queue]

    def decisive_lines(self, limit: int = 12) -> list[str]:
        """The log lines that decided its fate and its bounces' (each once, the last ``limit``)."""
        out: list[str] = []
        for hop in [*self.hops, *(h for d in self.dsns for h in d.hops)]:
            for line in hop.evidence:
                if line not in out:
                    out.append(line)
        return out[-limit:]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "message_id": self.message_id,
            "recipients": list(self.recipients),
            "state": self.state,
            "path": self.path,
            "delivered_to": [{"recipient": r, "host": h} for r, h in self.delivered_to],
            "dsn_generated_at": self.dsn_generated_at,
            "hops": [h.to_dict() for h in self.hops],
            "dsns": [d.to_dict() for d in self.dsns],
        }


class Tracker:
    def __init__(
        self,
        plan: LabPlan,
        events: list[MailEvent],
        queues: dict[str, list[QueueEntry]] | None = None,
    ):
        self.plan = plan
        self.events = events
        self.queued = {(h, e.queue_id) for h, entries in (queues or {}).items() for e in entries}
        self.by_node: dict[Node, list[MailEvent]] = defaultdict(list)
        self.message_id: dict[Node, str] = {}
        self.nodes_of: dict[str, list[Node]] = defaultdict(list)
        self.rejections: list[MailEvent] = [e for e in events if e.kind is Kind.REJECTED]
        for e in events:
            if e.queue_id is None:
                continue
            node = (e.host, e.queue_id)
            self.by_node[node].append(e)
            if e.kind is Kind.MESSAGE_ID and e.message_id:
                self.message_id[node] = e.message_id
                self.nodes_of[e.message_id].append(node)

    # --- following a message ---------------------------------------------------

    def history(self, name: str, message_id: str, recipients: tuple[str, ...], depth: int = 0) -> History:
        hist = History(name, message_id, recipients)
        nodes = self.nodes_of.get(message_id, [])
        if not nodes:
            return hist
        targets: dict[Node, Node] = {}
        edges: dict[Node, list[Node]] = defaultdict(list)
        for node in nodes:
            for e in self.by_node[node]:
                if e.kind is Kind.RELAYED:
                    nxt = self._next_node(e, message_id)
                    if nxt is not None and nxt not in edges[node]:
                        edges[node].append(nxt)
                        targets[nxt] = node
        starts = [n for n in nodes if n not in targets] or nodes[:1]
        seen: set[Node] = set()
        order: list[Node] = []

        def walk(node: Node) -> None:
            if node in seen:
                return
            seen.add(node)
            order.append(node)
            for nxt in edges.get(node, []):
                walk(nxt)

        for start in sorted(starts, key=lambda n: self.by_node[n][0].seq if self.by_node[n] else 0):
            walk(start)
        for node in order:
            hist.hops.append(self._hop(node, edges.get(node, [])))
            for e in self.by_node[node]:
                if e.kind is Kind.DELIVERED and e.recipient:
                    hist.delivered_to.append((e.recipient, node[0]))
                if e.kind is Kind.DSN and e.dsn_queue_id and depth < 3:
                    dsn_node = (node[0], e.dsn_queue_id)
                    dsn_mid = self.message_id.get(dsn_node)
                    if dsn_mid:
                        sender = self._sender(node) or ""
                        hist.dsn_generated_at.append(node[0])
                        hist.dsns.append(self.history(f"{name} bounce", dsn_mid, (sender,), depth + 1))
        hist.state = _state(hist)
        return hist

    def _sender(self, node: Node) -> str | None:
        for e in self.by_node[node]:
            if e.sender is not None and e.kind in (Kind.SENDER, Kind.RECEIVED):
                return e.sender
        return None

    def _next_node(self, event: MailEvent, message_id: str) -> Node | None:
        host = self.plan.host_by_address(event.relay_address or "") if event.relay_address else None
        if host is None and event.relay_name:
            host = self.plan.host_by_fqdn(event.relay_name)
        if host is None:
            return None
        if event.next_queue_id and (host, event.next_queue_id) in self.by_node:
            return (host, event.next_queue_id)
        # The reply did not name a queue id: fall back to the Message-ID on that host.
        candidates = [n for n in self.nodes_of.get(message_id, []) if n[0] == host]
        return candidates[0] if candidates else None

    def _hop(self, node: Node, nexts: list[Node]) -> Hop:
        host, qid = node
        events = self.by_node[node]
        outcomes = [e for e in events if e.kind in _OUTCOME_KINDS]
        last = outcomes[-1] if outcomes else None
        in_queue = node in self.queued
        hop = Hop(
            host=host,
            queue_id=qid,
            outcome=str(last.kind) if last else ("queued" if in_queue else "received"),
            next_host=nexts[0][0] if nexts else None,
            address=last.relay_address if last else None,
            reason=last.reason if last else None,
            in_queue=in_queue,
        )
        if in_queue and last is not None and last.kind is Kind.DEFERRED:
            hop.outcome = "deferred"
        hop.evidence = self._evidence(host, events, last)
        return hop

    def _evidence(self, host: str, events: list[MailEvent], last: MailEvent | None) -> list[str]:
        """The lines that explain this hop: notes, the decisive status, the peer's rejection."""
        lines: list[str] = []
        notes = [e for e in events if e.kind is Kind.NOTE]
        seen_reasons: set[str] = set()
        for e in notes:
            key = (e.relay_address or "") + (e.reason or "")
            if key not in seen_reasons:
                seen_reasons.add(key)
                lines.append(f"{host}: {e.line}")
        decisive = [e for e in events if e.kind in (Kind.DEFERRED, Kind.BOUNCED, Kind.EXPIRED, Kind.DSN, Kind.DISCARDED)]
        if decisive:
            shown = {e.line for e in decisive[-3:]}
            lines += [f"{host}: {e.line}" for e in decisive if e.line in shown]
        elif last is not None:
            lines.append(f"{host}: {last.line}")
        if last is not None and last.kind is Kind.BOUNCED and last.relay_address:
            peer = self.plan.host_by_address(last.relay_address)
            for r in self.rejections:
                if r.host == peer and r.recipient == last.recipient:
                    lines.append(f"{peer}: {r.line}")
                    break
        return lines


def _state(hist: History) -> str:
    if {r.lower() for r, _ in hist.delivered_to} >= {r.lower() for r in hist.recipients}:
        return "delivered"
    if any(h.in_queue for h in hist.hops):
        return "queued"
    if hist.dsn_delivered:
        return "returned"
    if any(d.state == "queued" or d.state == "bounce-queued" for d in hist.dsns):
        return "bounce-queued"
    if hist.delivered:
        return "delivered"  # some recipients; the rest are reported per hop
    return "lost"


def dsn_in_mailbox(messages: list[MailboxMessage], message_id: str) -> bool:
    return any(m.is_dsn and message_id in m.refers_to for m in messages)
