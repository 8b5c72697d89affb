"""From received bytes to reply bytes: parsing, zone lookup, faults, packing.

Pure computation with no sockets or clocks, so it is unit-testable on its own
and cheap enough to run on the receive thread. The server decides *when* the
reply leaves; this module decides *what* it is.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from dnslib import EDNS0, QTYPE, RCODE, RR, DNSHeader, DNSQuestion, DNSRecord

from .rules import Action, Query, Rule, RuleBook
from .transport import Peer
from .zones import Lookup, ZoneSet

# Classic limit for UDP answers to clients that do not use EDNS (RFC 1035).
UDP_PLAIN_MAX = 512
# What we offer and honour with EDNS: the DNS Flag Day 2020 default.
UDP_EDNS_MAX = 1232
CLASS_IN, CLASS_ANY = 1, 255


def rr_text(rr: RR) -> str:
    """Log form of a record: 'mx10.brainbird.nl. 60 AAAA 2001:db8:1::10'."""
    return f"{str(rr.rname).lower()} {rr.ttl} {QTYPE[rr.rtype]} {rr.rdata}"


@dataclass
class Outcome:
    """What to do with one received message."""

    wire: bytes | None                     # None: send nothing
    delay_ms: float = 0.0                  # requested delay before sending
    entry: dict[str, Any] = field(default_factory=dict)   # query-log fields


class Engine:
    def __init__(self, zones: ZoneSet, rules: RuleBook | None = None) -> None:
        self.zones = zones
        # Replaced whole (never mutated) when rules change: a reference swap is
        # atomic, so a query sees either the old or the new list, never a mix.
        self.rules = rules or RuleBook()

    def handle(self, data: bytes, peer: Peer) -> Outcome:
        entry: dict[str, Any] = {"id": None, "name": None, "type": None, "rcode": None,
                                 "answers": [], "rule": None}
        if len(data) < 12:
            entry["error"] = f"short message ({len(data)} bytes)"
            return Outcome(None, entry=entry)
        msg_id, flags, qdcount = struct.unpack("!HHH", data[:6])
        entry["id"] = msg_id
        if flags & 0x8000:
            # Answering a response could start a ping-pong with another server.
            entry["error"] = "message is a response (QR=1); ignored"
            return Outcome(None, entry=entry)
        opcode = (flags >> 11) & 0xF
        try:
            request = DNSRecord.parse(data)
        except Exception as e:  # dnslib raises DNSError, but also struct/Index/Unicode errors
            entry["error"] = f"malformed query: {type(e).__name__}: {e}"[:300]
            return self._header_only(msg_id, opcode, flags, RCODE.FORMERR, entry)
        if opcode != 0:
            entry["error"] = f"opcode {opcode} not implemented"
            return self._header_only(msg_id, opcode, flags, RCODE.NOTIMP, entry)
        if qdcount != 1 or len(request.questions) != 1:
            entry["error"] = f"expected 1 question, got {len(request.questions)}"
            return self._header_only(msg_id, opcode, flags, RCODE.FORMERR, entry)
        q = request.q
        labels = q.qname.label
        if any(len(x) > 63 for x in labels) or sum(len(x) + 1 for x in labels) + 1 > 255:
            # dnslib parses these, but they are illegal (RFC 1035 §2.3.4)
            # and would fail when packed into the reply.
            entry["error"] = "query name has a label over 63 or a name over 255 octets"
            return self._header_only(msg_id, opcode, flags, RCODE.FORMERR, entry)
        name = str(q.qname).lower()
        qtype = QTYPE[q.qtype]
        entry.update(name=name, type=qtype)
        reply = DNSRecord(DNSHeader(id=msg_id, qr=1, aa=1, ra=0, rd=request.header.rd),
                          q=DNSQuestion(q.qname, q.qtype, q.qclass))
        if q.qclass not in (CLASS_IN, CLASS_ANY) or q.qtype in (QTYPE.AXFR, QTYPE.IXFR):
            reply.header.aa = 0
            reply.header.rcode = RCODE.REFUSED
            return self._finish(request, reply, peer, entry)
        rule = self.rules.decide(Query(name, qtype, peer.client, peer.family, peer.transport))
        if rule is None:
            self._fill(reply, self.zones.lookup(name, q.qtype))
            return self._finish(request, reply, peer, entry)
        action = rule.action
        entry["rule"] = rule.name
        if action.drop:
            entry["dropped"] = True
            return Outcome(None, entry=entry)
        if action.delay_ms:
            entry["requested_delay_ms"] = action.delay_ms
        if action.rcode:
            self._forced_rcode(reply, name, action.rcode)
        else:
            self._fill(reply, self._shape(self.zones.lookup(name, q.qtype), rule, action, name, qtype))
        return self._finish(request, reply, peer, entry, action.truncate, action.delay_ms)

    def _forced_rcode(self, reply: DNSRecord, name: str, rcode: str) -> None:
        zone = self.zones.find(name)
        if rcode in ("NODATA", "NXDOMAIN"):
            # Shaped like a real negative answer: SOA in authority if we are
            # authoritative for the name, so resolvers cache and trust it.
            reply.header.rcode = RCODE.NOERROR if rcode == "NODATA" else RCODE.NXDOMAIN
            if zone is not None:
                reply.add_auth(zone.negative_soa())
            else:
                reply.header.aa = 0
        else:
            reply.header.rcode = getattr(RCODE, rcode)
            reply.header.aa = 0

    @staticmethod
    def _shape(result: Lookup, rule: Rule, action: Action, name: str, qtype: str) -> Lookup:
        answers = list(result.answers)
        start = result.final_rrset_start
        if action.order == "rotate" and len(answers) - start > 1:
            final = answers[start:]
            k = rule.next_rotation(name, qtype) % len(final)
            answers[start:] = final[k:] + final[:k]
        if action.ttl is not None:
            # Copies: the zone's RR objects are shared by every thread.
            answers = [RR(rr.rname, rr.rtype, rr.rclass, action.ttl, rr.rdata) for rr in answers]
        return Lookup(result.rcode, answers, result.authority, result.zone)

    @staticmethod
    def _fill(reply: DNSRecord, result: Lookup) -> None:
        reply.header.rcode = result.rcode
        if result.zone is None:
            reply.header.aa = 0   # not our zone: no authority to claim
        for rr in result.answers:
            reply.add_answer(rr)
        for rr in result.authority:
            reply.add_auth(rr)

    def _finish(self, request: DNSRecord, reply: DNSRecord, peer: Peer,
                entry: dict[str, Any], truncate: bool = False, delay_ms: float = 0.0) -> Outcome:
        edns = next((rr for rr in request.ar if rr.rtype == QTYPE.OPT), None)
        if edns is not None:
            reply.add_ar(EDNS0(udp_len=UDP_EDNS_MAX))
        entry["rcode"] = RCODE[reply.header.rcode]
        entry["answers"] = [rr_text(rr) for rr in reply.rr]
        wire = reply.pack()
        if peer.transport == "udp":
            limit = UDP_PLAIN_MAX if edns is None else max(UDP_PLAIN_MAX, min(edns.rclass, UDP_EDNS_MAX))
            if truncate or len(wire) > limit:
                # TC=1 with empty sections: the client must retry over TCP
                # (a partial RRset would look like a complete answer).
                reply.rr, reply.auth = [], []
                reply.header.tc = 1
                entry["tc"] = True
                entry["answers"] = []
                wire = reply.pack()
        return Outcome(wire, delay_ms, entry)

    @staticmethod
    def _header_only(msg_id: int, opcode: int, flags: int, rcode: int,
                     entry: dict[str, Any]) -> Outcome:
        rd = (flags >> 8) & 1
        out_flags = 0x8000 | (opcode << 11) | (rd << 8) | rcode
        entry["rcode"] = RCODE[rcode]
        return Outcome(struct.pack("!HHHHHH", msg_id, out_flags, 0, 0, 0, 0), entry=entry)


def internal_error(data: bytes, exc: Exception) -> Outcome:
    """SERVFAIL for a query that hit a bug, so the client is not left waiting."""
    entry: dict[str, Any] = {"id": None, "name": None, "type": None, "rcode": None,
                             "answers": [], "rule": None,
                             "error": f"internal error: {type(exc).__name__}: {exc}"[:300]}
    if len(data) < 12:
        return Outcome(None, entry=entry)
    msg_id, flags = struct.unpack("!HH", data[:4])
    entry["id"] = msg_id
    return Engine._header_only(msg_id, (flags >> 11) & 0xF, flags, RCODE.SERVFAIL, entry)
