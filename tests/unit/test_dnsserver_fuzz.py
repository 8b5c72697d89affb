"""Robustness: >= 10,000 hostile messages over UDP and TCP, then a normal query.

Deterministic (seeded) so a failure can be replayed. The server must answer
correctly afterwards, keep its listener threads, never hit an internal error,
and keep its thread count bounded while idle connections pile up.
"""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dnslib import EDNS0, DNSRecord
from dnsserver_support import answers, config_dict, query, rcode, read_log

from testbed.dnsserver.config import parse_config
from testbed.dnsserver.server import LabDNSServer

MAX_TCP = 16
NAMES = ["mx10.brainbird.nl.", "brainbird.nl.", "mail.skimbee.net.", "nope.brainbird.nl.",
         "example.com.", "10.1.18.198.in-addr.arpa.", "smtp.brainbird.nl."]
TYPES = ["A", "AAAA", "MX", "PTR", "TXT", "ANY", "SOA", "CNAME", "AXFR", "NS"]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LabDNSServer]:
    cfg = config_dict(rules=[
        # Valid-looking survivors of mutation also exercise the scheduler and truncation.
        {"match": {"name": "*.brainbird.nl.", "type": "AAAA"}, "action": {"delay_ms": 5}},
        {"match": {"name": "mail.skimbee.net."}, "action": {"truncate": True}},
    ])
    srv = LabDNSServer(parse_config(cfg), str(tmp_path / "q.jsonl"),
                       tcp_idle_timeout=2.0, max_tcp_connections=MAX_TCP)
    srv.start()
    yield srv
    srv.stop()


def valid_query(rng: random.Random) -> bytes:
    q = DNSRecord.question(rng.choice(NAMES), rng.choice(TYPES))
    if rng.random() < 0.3:
        q.add_ar(EDNS0(udp_len=rng.choice([0, 1, 512, 1232, 4096, 65535])))
    return q.pack()


def _hdr(rng: random.Random) -> bytes:
    return struct.pack("!HHHHHH", rng.getrandbits(16), rng.getrandbits(16),
                       *(rng.choice([0, 1, 2, 255, 65535]) for _ in range(4)))


def hostile(rng: random.Random) -> bytes:
    """One hostile message, from a family of generators."""
    kind = rng.randrange(11)
    if kind == 0:                                       # random bytes
        return rng.randbytes(rng.randrange(0, 600))
    if kind == 1:                                       # truncated valid query
        w = valid_query(rng)
        return w[:rng.randrange(0, len(w))]
    if kind == 2:                                       # bit flips in a valid query
        w = bytearray(valid_query(rng))
        for _ in range(rng.randrange(1, 6)):
            w[rng.randrange(len(w))] ^= 1 << rng.randrange(8)
        return bytes(w)
    if kind == 3:                                       # valid query plus trailing junk
        return valid_query(rng) + rng.randbytes(rng.randrange(1, 200))
    if kind == 4:                                       # oversized
        return valid_query(rng) + rng.randbytes(rng.randrange(2000, 60000))
    if kind == 5:                                       # compression pointer tricks
        ptr = rng.choice([b"\xc0\x0c", b"\xc0\x0e", b"\xc0\xff", b"\x01a\xc0\x0c", b"\xff\xff"])
        return _hdr(rng)[:4] + b"\x00\x01\x00\x00\x00\x00\x00\x00" + ptr + b"\x00\x01\x00\x01"
    if kind == 6:                                       # illegal label / name lengths
        label = bytes([rng.choice([63, 64, 100, 127])]) + b"a" * rng.choice([63, 64, 100, 127])
        return _hdr(rng)[:4] + b"\x00\x01\x00\x00\x00\x00\x00\x00" + label * rng.randrange(1, 6) + b"\x00\x00\x01\x00\x01"
    if kind == 7:                                       # header only, absurd counts
        return _hdr(rng)
    if kind == 8:                                       # responses (QR=1) and odd opcodes
        w = bytearray(valid_query(rng))
        w[2] = rng.choice([0x80, 0x84, 0x10, 0x28, 0x78, 0xff])
        return bytes(w)
    if kind == 9:                                       # odd classes
        w = bytearray(valid_query(rng))
        qclass_at = len(w) - 2 if w[11] == 0 else None
        if qclass_at:
            w[qclass_at:qclass_at + 2] = struct.pack("!H", rng.choice([0, 3, 4, 254, 255, 65535]))
        return bytes(w)
    return valid_query(rng)                             # some valid ones in the mix


def send_udp_bursts(srv: LabDNSServer, rng: random.Random, goal: int, addrs: list[str]) -> int:
    """Bursts of 200 back to back until the server has received ``goal`` messages.

    Between bursts the server gets to drain its socket (big datagrams fill a
    default receive buffer in a handful); what the kernel drops is made up
    by the next burst. Returns the number of datagrams sent.
    """
    socks = [socket.socket(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_DGRAM)
             for a in addrs]
    sent = 0
    try:
        while srv.messages < goal and sent < goal * 3:
            for i in range(200):
                k = (sent + i) % len(addrs)
                try:
                    socks[k].sendto(hostile(rng), (addrs[k], srv.port))
                except OSError:
                    pass            # e.g. a datagram too large for the kernel
            sent += 200
            settle(srv)
    finally:
        for s in socks:
            s.close()
    return sent


def settle(srv: LabDNSServer) -> None:
    """Wait until the server's message count stops moving."""
    last = -1
    while srv.messages != last:
        last = srv.messages
        time.sleep(0.01)


def flood(port: int, packets: list[bytes]) -> None:
    """No pacing at all: the kernel may drop some; the server must not care."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for p in packets:
            try:
                s.sendto(p, ("127.0.0.1", port))
            except OSError:
                pass


def tcp_session(port: int, messages: list[bytes], rng: random.Random) -> None:
    """One connection, several framed (or deliberately misframed) messages."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            for m in messages:
                style = rng.randrange(5)
                if style == 0:           # length says more than is sent, then close
                    s.sendall(struct.pack("!H", len(m) + 50) + m)
                    return
                if style == 1:           # half a length prefix, then close
                    s.sendall(b"\x00")
                    return
                if style == 2:           # zero-length message
                    s.sendall(b"\x00\x00")
                    continue
                s.sendall(struct.pack("!H", min(len(m), 65535)) + m[:65535])
            s.settimeout(0.05)
            try:
                while s.recv(65535):
                    pass
            except OSError:
                pass
    except OSError:
        pass


def check_normal_service(srv: LabDNSServer) -> None:
    for addr in ("127.0.0.1", "::1"):
        for tcp in (False, True):
            r = query(srv.port, "mx10.brainbird.nl.", "A", addr=addr, tcp=tcp)
            assert rcode(r) == "NOERROR" and r.header.aa
            assert answers(r) == [("mx10.brainbird.nl.", "A", "198.18.1.10")]
    r = query(srv.port, "mx10.brainbird.nl.", "AAAA")
    assert answers(r) == [("mx10.brainbird.nl.", "AAAA", "2001:db8:1::10")]


def wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_fuzz_then_normal_query(server: LabDNSServer, tmp_path: Path) -> None:
    rng = random.Random(20100630)
    baseline_threads = threading.active_count()
    # Phase 1: an unpaced flood of short fragments (the kernel may drop some)
    # alongside 300 TCP sessions x 5 (mis)framed messages from 6 client threads.
    flood_packets = [valid_query(rng)[:rng.randrange(0, 40)] for _ in range(3000)]
    sessions = [[hostile(rng) for _ in range(5)] for _ in range(300)]
    seeds = [rng.random() for _ in sessions]

    def run_sessions(chunk: list[int]) -> None:
        for i in chunk:
            tcp_session(server.port, sessions[i], random.Random(seeds[i]))

    threads = [threading.Thread(target=flood, args=(server.port, flood_packets))]
    threads += [threading.Thread(target=run_sessions, args=(list(range(k, 300, 6)),)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    settle(server)
    after_phase1 = server.messages

    # Phase 2: hostile UDP bursts over v4 and v6 until 10,000 more messages
    # in all have reached the server's parser.
    sent = send_udp_bursts(server, random.Random(rng.random()), after_phase1 + 10_000,
                           ["127.0.0.1", "::1"])
    settle(server)
    assert sent + len(flood_packets) + sum(map(len, sessions)) >= 10_000
    assert server.messages >= after_phase1 + 10_000

    # Idle connections that never send a full message: the oldest are evicted,
    # so they cost neither a thread each nor TCP service for everyone else.
    idle = []
    for _ in range(MAX_TCP * 3):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=2)
        s.sendall(b"\x00")
        idle.append(s)
    time.sleep(0.3)
    assert sum(t.connections for t in server.tcp) <= MAX_TCP
    assert threading.active_count() <= baseline_threads + MAX_TCP + 1
    check_normal_service(server)       # still answering over TCP at the cap
    for s in idle:
        s.close()

    assert all(lst.thread.is_alive() for lst in [*server.udp, *server.tcp])
    check_normal_service(server)
    assert wait_for(lambda: threading.active_count() <= baseline_threads + 1, 10), \
        f"threads {threading.active_count()} vs baseline {baseline_threads}"

    server.log.sync()
    lines = read_log(str(tmp_path / "q.jsonl"))
    assert len(lines) >= 10_000
    internal = [x for x in lines if "internal error" in str(x.get("error"))]
    assert internal == []
    assert any("malformed" in str(x.get("error")) for x in lines)
    assert any("closed to make room" in str(x.get("error")) for x in lines)
