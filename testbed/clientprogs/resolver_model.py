#!/usr/bin/env python3
"""tb-resolver-model: BEHAVIOUR MODELS of resolvers that cannot run in the lab.

This is a MODEL, not the modelled software. Mac OS X 10.6 cannot run here, so
this program sends the same two DNS queries its getaddrinfo sent (real UDP
packets to the lab's real DNS server) and then decides, by the rules below,
which answers Mac OS X 10.6 would have used. The decision is modelled; the
packets and their timing are real.

    tb-resolver-model macos-10.6 NAME [--server ADDR] [--port N] [--timeout S]
                      [--rule comment|code] [--json-out FILE]

prints ONE JSON object on stdout (see ``main``); exit status 0 with addresses,
2 for EAI_NONAME, 1 when it cannot run (no nameserver, bad arguments).

Model "macos-10.6": "Mac OS X 10.6 getaddrinfo (mDNSResponder path)".

What it follows (Apple Libinfo, ``lookup.subproj/mdns_module.c``; the version
read is the 10.6-era file, "Copyright (c) 2008-2009 Apple Inc.", whose
``_mdns_query_mDNSResponder`` takes a ``timeout_sec`` from the resolver
configuration; its Libinfo version tag, 324 or a 330.x point release, is not
printed in the file and stays unconfirmed):

* ``_mdns_addrinfo`` with AF_UNSPEC searches with type 0, and
  ``_mdns_query_mDNSResponder`` then starts two ``DNSServiceQueryRecord``
  queries back to back, A first, AAAA second ("unspecified type: do parallel
  A and AAAA"), with ``kDNSServiceFlagsReturnIntermediates``.
* Its "Timeout Logic" comment (the same text is still in the 2018 file):
  "parallel queries modify the total timeout upon receipt of the first
  response. The new total timeout is set to an effective value of 2N where N
  is the time taken to receive the A response (the original total timeout is
  preserved if 2N would have exceeded it). However, since mDNSResponder caches
  values, a minimum value of 50ms for N is enforced". Rule ``comment`` (the
  default) is exactly that: the AAAA is awaited until 2*max(N, 50 ms) after
  the queries went out, at most until the total timeout.
* The code under that comment in the same file computes something else:
  ``delta = now - start; tn = 2 * delta; delta = tn + 100ms`` and, if
  ``delta`` fits in the remaining timeout, ``_mdns_deadline(&finish, &delta)``,
  i.e. a deadline of N + 2N + 100 ms from the start. Rule ``code`` models
  that. (Later files, 2010 onwards, add 2, 5 or 10 seconds instead:
  ``SHORT_AAAA_EXTRA``, ``MEDIUM_AAAA_EXTRA``, ``LONG_AAAA_EXTRA``; not
  modelled.) Which rule the shipped 10.6 binary ran is unconfirmed; the study
  (slides 24-26) saw the AAAA lost when the empty A answer came first, which
  both rules produce once the AAAA is late enough.
* "got A" is set when the A query is complete OR its context has an error:
  ``if (_mdns_query_is_complete(&ctx[i]) || ctx[i].error != 0) { if
  (ctx[i].type == ns_t_a) got_response = 1; }``. A negative A reply (NODATA,
  NXDOMAIN) reaches the callback as an error because of
  ``kDNSServiceFlagsReturnIntermediates`` (mDNSResponder's
  ``kDNSServiceErr_NoSuchRecord``; that mapping is mDNSResponder's and is
  assumed here, not read). So a negative A starts the 2N clock too.
* An AAAA reply first does not change the deadline (only the A does): the
  model then waits up to the total timeout for the A.
* The loop ends when both queries are complete (answer or error), or at the
  deadline; a query with no addresses is cleared; no addresses at all ->
  ``SI_STATUS_EAI_NONAME`` ("EAI_NONAME").
* Order: ``si_addrinfo_list_from_hostent`` (``si_getaddrinfo.c``) appends the
  IPv6 hostent's addresses first, then the IPv4 ones, each in the order the
  records arrived; no RFC 3484 sorting in this path (later Libinfo adds
  ``_gai_addr_sort``; the notes date an IPv4-first sort to Libinfo-330.7 —
  not confirmed here).
* Total timeout: the resolver's configured timeout, ``RES_MAXRETRANS`` when
  none (30 s in BIND-derived resolv.h; Apple's value not confirmed).
  ``--timeout`` sets it.

Not modelled: mDNSResponder's own retransmissions and server selection (each
query is sent once, to one server), its cache, search domains (NAME is
queried as given), SERVFAIL/REFUSED/truncated replies (mDNSResponder does not
hand those to Libinfo as answers; the model ignores them and keeps waiting).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import random
import select
import socket
import struct
import sys
import time
from dataclasses import dataclass

MODEL = "macos-10.6"
MODELS = "Mac OS X 10.6 getaddrinfo (mDNSResponder path)"
SOURCE = (
    "BEHAVIOUR MODEL after Apple Libinfo lookup.subproj/mdns_module.c (10.6-era file, (c) 2008-2009; "
    "Libinfo-324 per the study notes, version tag unconfirmed): _mdns_query_mDNSResponder sends A and AAAA "
    "in parallel; 'Timeout Logic': after the A response at N the total timeout becomes 2N, N >= 50 ms, "
    "capped by the total timeout (rule 'comment'; the code below it computes N + 2N + 100 ms: rule 'code'); "
    "an A error counts as the A response; si_getaddrinfo.c si_addrinfo_list_from_hostent: AAAA first, then A, "
    "unsorted; nothing -> SI_STATUS_EAI_NONAME"
)
RULES = ("comment", "code")
#: "a minimum value of 50ms for N is enforced" (the Timeout Logic comment).
N_FLOOR_MS = 50.0
#: "delta = tn + 100ms" (the code under the comment, 2008-2009 file).
CODE_EXTRA_MS = 100.0
#: RES_MAXRETRANS (BIND-derived resolv.h), used when the resolver has no timeout.
DEFAULT_TIMEOUT_S = 30.0
#: Replies Libinfo sees as a finished query: an answer, or a negative answer.
COUNTED_RCODES = ("NOERROR", "NXDOMAIN")
EAI_NONAME = "EAI_NONAME"

QTYPES = {"A": 1, "AAAA": 28}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


# --- the pure decision core ---------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One reply as the model sees it: when it arrived (ms after the queries went out)."""

    qtype: str  # "A" | "AAAA"
    at_ms: float
    rcode: str = "NOERROR"
    addresses: tuple[str, ...] = ()
    truncated: bool = False

    @property
    def counts(self) -> bool:
        """Does Libinfo see this reply as the query's answer (positive or negative)?"""
        return not self.truncated and self.rcode in COUNTED_RCODES and self.qtype in QTYPES


@dataclass(frozen=True)
class Decision:
    """What the modelled getaddrinfo returns, and when it returned."""

    addresses: tuple[str, ...]
    error: str | None
    decided_ms: float
    #: Both queries finished before the deadline (else: decided at the deadline).
    complete: bool
    #: The query types whose replies were taken into account, in arrival order.
    used: tuple[str, ...]
    reason: str


def aaaa_deadline_ms(a_ms: float, timeout_ms: float, rule: str = "comment", prev_event_ms: float = 0.0) -> float:
    """Until when (ms after the start) the model waits for AAAA once the A reply came at ``a_ms``.

    ``comment``: 2 * max(N, 50 ms), the original total timeout if that is shorter.
    ``code``: N + (2N + 100 ms) if 2N + 100 ms fits in the timeout left at the
    previous loop iteration (``prev_event_ms``), else the original deadline.
    """
    if rule == "comment":
        return min(timeout_ms, 2.0 * max(a_ms, N_FLOOR_MS))
    if rule == "code":
        extra = 2.0 * a_ms + CODE_EXTRA_MS
        return a_ms + extra if extra <= timeout_ms - prev_event_ms else timeout_ms
    raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")


def decide(replies: list[Reply] | tuple[Reply, ...], timeout_ms: float, rule: str = "comment") -> Decision:
    """The modelled Mac OS X 10.6 getaddrinfo for these reply arrivals (a MODEL).

    Pure: the same arrivals give the same decision. Replies that do not count
    (SERVFAIL, REFUSED, truncated) and repeated replies of a type are ignored;
    replies after the decision are ignored. With only some replies known yet
    (the runtime asks while it waits), ``decided_ms`` is the current deadline.
    """
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; known: {', '.join(RULES)}")
    events = sorted((r for r in replies if r.counts), key=lambda r: r.at_ms)
    deadline = timeout_ms
    got: dict[str, Reply] = {}
    prev = 0.0
    why = f"total timeout {timeout_ms:g} ms"
    complete = False
    decided = deadline
    for r in events:
        if r.at_ms > deadline:
            break
        if r.qtype in got:
            continue
        got[r.qtype] = r
        if len(got) == 2:
            complete, decided = True, r.at_ms
            break
        if r.qtype == "A":
            deadline = aaaa_deadline_ms(r.at_ms, timeout_ms, rule, prev)
            kind = "A" if r.addresses else f"negative A ({_negative(r)})"
            formula = "2 x max(N, 50 ms)" if rule == "comment" else "N + 2N + 100 ms"
            why = f"{kind} at {r.at_ms:g} ms: AAAA awaited until {deadline:g} ms ({formula}, rule {rule})"
        else:
            why = f"AAAA first at {r.at_ms:g} ms: A awaited until the total timeout {timeout_ms:g} ms"
        prev = r.at_ms
        decided = deadline
    v6 = got["AAAA"].addresses if "AAAA" in got else ()
    v4 = got["A"].addresses if "A" in got else ()
    addresses = tuple(v6) + tuple(v4)
    if complete:
        reason = f"both replies in by {decided:g} ms"
    elif got:
        missing = "AAAA" if "A" in got else "A"
        reason = f"{why}; {missing} not in time"
    else:
        reason = f"no reply counted before the {why}"
    used = tuple(r.qtype for r in sorted(got.values(), key=lambda r: r.at_ms))
    return Decision(addresses, None if addresses else EAI_NONAME, decided, complete, used, reason)


def _negative(r: Reply) -> str:
    return "NXDOMAIN" if r.rcode == "NXDOMAIN" else "NODATA"


# --- DNS packets (stdlib only) --------------------------------------------------------


def build_query(qid: int, name: str, qtype: str) -> bytes:
    """A standard query, RD set, no EDNS (what a stub resolver of 2009 sent)."""
    labels = [p for p in name.rstrip(".").split(".") if p] if name not in (".", "") else []
    qname = b""
    for label in labels:
        raw = label.encode("idna") if not label.isascii() else label.encode("ascii")
        if not 0 < len(raw) < 64:
            raise ValueError(f"bad label {label!r} in {name!r}")
        qname += bytes([len(raw)]) + raw
    qname += b"\x00"
    if len(qname) > 255:
        raise ValueError(f"name too long: {name!r}")
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", QTYPES[qtype], 1)


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    """A (possibly compressed) name at ``off``; returns it and the offset after it."""
    labels: list[str] = []
    end = None
    jumps = 0
    while True:
        if off >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[off]
        if n & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise ValueError("truncated compression pointer")
            if end is None:
                end = off + 2
            off = ((n & 0x3F) << 8) | msg[off + 1]
            jumps += 1
            if jumps > 64:
                raise ValueError("compression loop")
            continue
        if n & 0xC0:
            raise ValueError("bad label type")
        off += 1
        if n == 0:
            break
        labels.append(msg[off:off + n].decode("ascii", "replace"))
        off += n
    return ".".join(labels) + ".", (end if end is not None else off)


@dataclass(frozen=True)
class Parsed:
    qid: int
    rcode: str
    truncated: bool
    qname: str
    qtype: int
    addresses: tuple[str, ...]


def parse_reply(msg: bytes) -> Parsed:
    """The header, the question and the A/AAAA records of the answer section."""
    if len(msg) < 12:
        raise ValueError("shorter than a DNS header")
    qid, flags, qd, an, _ns, _ar = struct.unpack("!HHHHHH", msg[:12])
    if not flags & 0x8000:
        raise ValueError("not a response")
    off = 12
    qname, qtype = "", 0
    for i in range(qd):
        name, off = _read_name(msg, off)
        t, _c = struct.unpack("!HH", msg[off:off + 4])
        off += 4
        if i == 0:
            qname, qtype = name, t
    addresses: list[str] = []
    for _ in range(an):
        _name, off = _read_name(msg, off)
        if off + 10 > len(msg):
            raise ValueError("truncated record")
        t, c, _ttl, rdlen = struct.unpack("!HHIH", msg[off:off + 10])
        off += 10
        rdata = msg[off:off + rdlen]
        off += rdlen
        if len(rdata) != rdlen:
            raise ValueError("truncated rdata")
        if c == 1 and t == qtype == 1 and rdlen == 4:
            addresses.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif c == 1 and t == qtype == 28 and rdlen == 16:
            addresses.append(socket.inet_ntop(socket.AF_INET6, rdata))
    rcode = RCODES.get(flags & 0x000F, str(flags & 0x000F))
    return Parsed(qid, rcode, bool(flags & 0x0200), qname, qtype, tuple(addresses))


# --- the runtime: real queries, modelled decision -------------------------------------


def nameserver_from_resolv_conf(path: str = "/etc/resolv.conf") -> str:
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "nameserver":
                return parts[1]
    raise ValueError(f"no nameserver line in {path}")


@dataclass
class Query:
    qtype: str
    qid: int
    sock: socket.socket
    sent: float = 0.0  # epoch
    answered: float | None = None
    rcode: str | None = None
    addresses: tuple[str, ...] = ()
    truncated: bool = False
    at_ms: float | None = None


def _addr_family(server: str) -> int:
    host = server.split("%", 1)[0]
    return socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET


def run(name: str, server: str, port: int, timeout_s: float, rule: str) -> dict:
    """Send A and AAAA at once, feed the arrivals to ``decide``, stop when it has decided."""
    family = _addr_family(server)
    target = socket.getaddrinfo(server, port, family, socket.SOCK_DGRAM, 0, socket.AI_NUMERICHOST)[0][4]
    ids = random.sample(range(1, 65536), 2)
    queries = [Query("A", ids[0], socket.socket(family, socket.SOCK_DGRAM)),
               Query("AAAA", ids[1], socket.socket(family, socket.SOCK_DGRAM))]
    packets = {q.qtype: build_query(q.qid, name, q.qtype) for q in queries}
    want_name = name.rstrip(".").lower() + "."
    timeout_ms = timeout_s * 1000.0
    try:
        for q in queries:
            q.sock.connect(target)
            q.sock.setblocking(False)
        start = time.monotonic()
        epoch0 = time.time()
        for q in queries:  # back to back, as the two DNSServiceQueryRecord calls
            q.sent = epoch0 + (time.monotonic() - start)
            q.sock.send(packets[q.qtype])
        by_sock = {q.sock: q for q in queries}
        while True:
            replies = [Reply(q.qtype, q.at_ms, q.rcode or "", q.addresses, q.truncated)
                       for q in queries if q.at_ms is not None]
            d = decide(replies, timeout_ms, rule)
            now_ms = (time.monotonic() - start) * 1000.0
            if d.complete or now_ms >= d.decided_ms:
                break
            waiting = [q.sock for q in queries if q.at_ms is None or not _counts(q)]
            if not waiting:
                break
            ready, _, _ = select.select(waiting, [], [], max(0.0, (d.decided_ms - now_ms) / 1000.0))
            for s in ready:
                q = by_sock[s]
                try:
                    data = s.recv(65535)
                except (ConnectionRefusedError, OSError):
                    continue  # an ICMP error: no answer from this server
                arrived_ms = (time.monotonic() - start) * 1000.0
                try:
                    p = parse_reply(data)
                except (ValueError, struct.error):
                    continue
                if p.qid != q.qid or p.qtype != QTYPES[q.qtype] or p.qname.lower() != want_name:
                    continue
                q.at_ms, q.answered = arrived_ms, epoch0 + arrived_ms / 1000.0
                q.rcode, q.addresses, q.truncated = p.rcode, p.addresses, p.truncated
    finally:
        for q in queries:
            q.sock.close()
    replies = [Reply(q.qtype, q.at_ms, q.rcode or "", q.addresses, q.truncated)
               for q in queries if q.at_ms is not None]
    d = decide(replies, timeout_ms, rule)
    return {
        "model": MODEL,
        "models": MODELS,
        "kind": "behaviour model",
        "source": SOURCE,
        "rule": rule,
        "name": name,
        "server": server,
        "port": port,
        "timeout_s": timeout_s,
        "queries": [
            {"type": q.qtype, "sent": q.sent, "answered": q.answered, "rcode": q.rcode,
             "addresses": list(q.addresses), "truncated": q.truncated, "used": q.qtype in d.used}
            for q in queries
        ],
        "addresses": list(d.addresses),
        "error": d.error,
        "decided_ms": round(d.decided_ms, 3),
        "complete": d.complete,
        "reason": d.reason,
    }


def _counts(q: Query) -> bool:
    return q.at_ms is not None and Reply(q.qtype, q.at_ms, q.rcode or "", q.addresses, q.truncated).counts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="tb-resolver-model",
        description="BEHAVIOUR MODEL of a resolver that cannot run here: sends the real DNS queries, "
                    "decides as the modelled resolver would (see the module docstring for the source). "
                    "Prints one JSON object.")
    ap.add_argument("model", choices=[MODEL], help=f"{MODEL}: {MODELS} (a model)")
    ap.add_argument("name", help="the host name to resolve (queried as given; no search domains)")
    ap.add_argument("--server", help="nameserver address (default: the first nameserver in /etc/resolv.conf)")
    ap.add_argument("--port", type=int, default=53, help="nameserver port (default 53)")
    ap.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                    help=f"total timeout in seconds (default {DEFAULT_TIMEOUT_S:g}: RES_MAXRETRANS)")
    ap.add_argument("--rule", choices=RULES, default="comment",
                    help="comment: AAAA awaited until 2*max(N,50ms) (Libinfo's Timeout Logic comment, default); "
                         "code: until N+2N+100ms (the code under it in the 2008-2009 file)")
    ap.add_argument("--json-out", help="also write the JSON object to this file (for tb-trace --resolver-json)")
    args = ap.parse_args(argv)
    if not args.timeout > 0:
        ap.error("--timeout must be positive")
    try:
        server = args.server or nameserver_from_resolv_conf()
        result = run(args.name, server, args.port, args.timeout, args.rule)
    except (OSError, ValueError) as e:
        print(f"tb-resolver-model: {e}", file=sys.stderr)
        return 1
    text = json.dumps(result, sort_keys=False)
    if args.json_out:
        tmp = args.json_out + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
        os.replace(tmp, args.json_out)
    print(text, flush=True)
    return 0 if result["addresses"] else 2


if __name__ == "__main__":
    sys.exit(main())
