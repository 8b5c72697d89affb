"""Shared helpers for the dnsserver unit tests (not a test module itself)."""

from __future__ import annotations

import copy
import json
import socket
from typing import Any

from dnslib import QTYPE, RCODE, DNSRecord

SOA = {"mname": "ns.lab.test.", "rname": "hostmaster.lab.test.", "serial": 1,
       "refresh": 60, "retry": 30, "expire": 600, "minimum": 30}

BASE_CONFIG: dict[str, Any] = {
    "listen": ["127.0.0.1", "::1"],
    "port": 0,
    "zones": [
        {"origin": "brainbird.nl.", "soa": SOA, "ttl": 60, "records": [
            {"name": "mx10.brainbird.nl.", "type": "A", "ttl": 60, "data": "198.18.1.10"},
            {"name": "mx10.brainbird.nl.", "type": "AAAA", "data": "2001:db8:1::10"},
            {"name": "mx20.brainbird.nl.", "type": "AAAA", "data": "2001:db8:6::20"},
            {"name": "mx30.brainbird.nl.", "type": "A", "data": "198.18.1.30"},
            {"name": "mx30.brainbird.nl.", "type": "AAAA", "data": "2001:db8:1::30"},
            {"name": "brainbird.nl.", "type": "MX", "data": "10 mx10.brainbird.nl."},
            {"name": "brainbird.nl.", "type": "MX", "data": "20 mx20.brainbird.nl."},
            {"name": "brainbird.nl.", "type": "MX", "data": "30 mx30.brainbird.nl."},
            {"name": "brainbird.nl.", "type": "TXT", "data": "\"v=spf1 -all\""},
            {"name": "smtp.brainbird.nl.", "type": "CNAME", "data": "mx10.brainbird.nl."},
            {"name": "rr.brainbird.nl.", "type": "A", "data": "198.18.1.1"},
            {"name": "rr.brainbird.nl.", "type": "A", "data": "198.18.1.2"},
            {"name": "rr.brainbird.nl.", "type": "A", "data": "198.18.1.3"},
        ]},
        {"origin": "skimbee.net.", "soa": SOA, "records": [
            {"name": "skimbee.net.", "type": "MX", "data": "10 mail.skimbee.net."},
            {"name": "mail.skimbee.net.", "type": "AAAA", "data": "2001:db8:2::25"},
        ]},
        {"origin": "18.198.in-addr.arpa.", "soa": SOA, "records": [
            {"name": "10.1.18.198.in-addr.arpa.", "type": "PTR", "data": "mx10.brainbird.nl."},
        ]},
        {"origin": "sub.brainbird.nl.", "soa": dict(SOA, serial=7), "records": [
            {"name": "host.sub.brainbird.nl.", "type": "A", "data": "198.18.5.5"},
        ]},
    ],
    "rules": [],
}


def config_dict(**overrides: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CONFIG)
    cfg.update(overrides)
    return cfg


def query(port: int, name: str, qtype: str = "A", *, addr: str = "127.0.0.1",
          tcp: bool = False, timeout: float = 15.0, edns: bool = False) -> DNSRecord:
    q = DNSRecord.question(name, qtype)
    if edns:
        from dnslib import EDNS0
        q.add_ar(EDNS0(udp_len=4096))
    raw = q.send(addr, port, tcp=tcp, timeout=timeout, ipv6=":" in addr)
    reply = DNSRecord.parse(raw)
    assert reply.header.id == q.header.id
    return reply


def rcode(reply: DNSRecord) -> str:
    return RCODE[reply.header.rcode]


def answers(reply: DNSRecord) -> list[tuple[str, str, str]]:
    return [(str(rr.rname).lower(), QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr]


def read_log(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def raw_udp(port: int, payload: bytes, addr: str = "127.0.0.1", timeout: float = 0.5) -> bytes | None:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(payload, (addr, port))
        try:
            return s.recv(65535)
        except socket.timeout:
            return None
