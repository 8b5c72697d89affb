"""Zone data and authoritative lookup.

The zones are built once from the validated config and never mutated, so the
receive threads can read them without locks. Rules (faults) are applied on top
of a lookup result elsewhere; this module only knows what the zone says.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dnslib import QTYPE, RCODE, RR

from .names import is_subdomain, normalise

# Long enough for any sane chain, short enough to stop a CNAME loop quickly.
MAX_CNAME_CHAIN = 8


@dataclass
class Zone:
    origin: str                      # normalised, e.g. "brainbird.nl."
    soa: RR                          # the zone's SOA record (owner = origin)
    rrsets: dict[tuple[str, int], list[RR]] = field(default_factory=dict)
    # Every owner name plus the empty non-terminals between it and the origin,
    # so "1.18.198.in-addr.arpa." is NODATA rather than NXDOMAIN (RFC 8020).
    names: set[str] = field(default_factory=set)

    def add(self, rr: RR) -> None:
        owner = normalise(str(rr.rname))
        self.rrsets.setdefault((owner, rr.rtype), []).append(rr)
        while True:
            self.names.add(owner)
            if owner == self.origin or "." not in owner[:-1]:
                break
            owner = owner.split(".", 1)[1]

    def negative_soa(self) -> RR:
        """SOA for the authority section of a negative answer (RFC 2308 §3 TTL)."""
        soa = self.soa
        return RR(soa.rname, QTYPE.SOA, soa.rclass, min(soa.ttl, soa.rdata.times[4]), soa.rdata)


@dataclass
class Lookup:
    """What the zone data says about one question."""

    rcode: int                       # RCODE.NOERROR / NXDOMAIN
    answers: list[RR]
    authority: list[RR]
    zone: Zone | None                # zone of the (final) name, None if outside all

    @property
    def final_rrset_start(self) -> int:
        """Index in ``answers`` where the final (non-CNAME) RRset begins."""
        i = 0
        while i < len(self.answers) and self.answers[i].rtype == QTYPE.CNAME:
            i += 1
        return i


class ZoneSet:
    def __init__(self, zones: list[Zone]) -> None:
        # Longest origin first, so the first zone that contains a name is the
        # most specific one ("longest matching zone origin wins").
        self.zones = sorted(zones, key=lambda z: len(z.origin), reverse=True)

    def find(self, name: str) -> Zone | None:
        for zone in self.zones:
            if is_subdomain(name, zone.origin):
                return zone
        return None

    def lookup(self, qname: str, qtype: int) -> Lookup:
        name = normalise(qname)
        zone = self.find(name)
        if zone is None:
            # The lab's zones are the whole namespace its hosts can see, and this
            # server is their only resolver: a name outside every zone does not
            # exist, as a real resolver would report it. (REFUSED reads as a
            # temporary failure to glibc, and MTAs would defer instead.)
            return Lookup(RCODE.NXDOMAIN, [], [], None)
        answers: list[RR] = []
        seen: set[str] = set()
        while True:
            if qtype == QTYPE.ANY:
                found = [rr for (owner, _t), rrs in zone.rrsets.items() if owner == name for rr in rrs]
            else:
                found = list(zone.rrsets.get((name, qtype), []))
            if found:
                return Lookup(RCODE.NOERROR, answers + found, [], zone)
            cname = zone.rrsets.get((name, QTYPE.CNAME))
            if cname and qtype != QTYPE.CNAME:
                answers.append(cname[0])
                seen.add(name)
                target = normalise(str(cname[0].rdata.label))
                next_zone = self.find(target)
                # Follow the chain only through our own zones; outside them the
                # client's resolver has to continue, as with a real authority.
                if next_zone is None or target in seen or len(seen) >= MAX_CNAME_CHAIN:
                    return Lookup(RCODE.NOERROR, answers, [], zone)
                name, zone = target, next_zone
                continue
            rcode = RCODE.NOERROR if name in zone.names else RCODE.NXDOMAIN
            return Lookup(rcode, answers, [zone.negative_soa()], zone)

