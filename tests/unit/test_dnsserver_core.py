"""Core server: zones, answers, transports, query log, config errors."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnslib import QTYPE, DNSRecord
from dnsserver_support import answers, config_dict, query, raw_udp, rcode, read_log

from testbed.dnsserver.config import load_config, parse_config
from testbed.dnsserver.errors import ConfigError
from testbed.dnsserver.server import LabDNSServer

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LabDNSServer]:
    srv = LabDNSServer(parse_config(config_dict()), str(tmp_path / "q.jsonl"))
    srv.start()
    yield srv
    srv.stop()


ADDRS = ["127.0.0.1", "::1"]
TRANSPORTS = [False, True]


@pytest.mark.parametrize("addr", ADDRS)
@pytest.mark.parametrize("tcp", TRANSPORTS, ids=["udp", "tcp"])
def test_a_aaaa_mx_ptr(server: LabDNSServer, addr: str, tcp: bool) -> None:
    p = server.port
    r = query(p, "mx10.brainbird.nl.", "A", addr=addr, tcp=tcp)
    assert rcode(r) == "NOERROR" and r.header.aa == 1 and r.header.ra == 0
    assert answers(r) == [("mx10.brainbird.nl.", "A", "198.18.1.10")]
    assert r.rr[0].ttl == 60
    r = query(p, "mx10.brainbird.nl.", "AAAA", addr=addr, tcp=tcp)
    assert answers(r) == [("mx10.brainbird.nl.", "AAAA", "2001:db8:1::10")]
    r = query(p, "brainbird.nl.", "MX", addr=addr, tcp=tcp)
    assert [a[2] for a in answers(r)] == ["10 mx10.brainbird.nl.", "20 mx20.brainbird.nl.",
                                         "30 mx30.brainbird.nl."]
    r = query(p, "10.1.18.198.in-addr.arpa.", "PTR", addr=addr, tcp=tcp)
    assert answers(r) == [("10.1.18.198.in-addr.arpa.", "PTR", "mx10.brainbird.nl.")]


def test_case_insensitive_and_txt(server: LabDNSServer) -> None:
    r = query(server.port, "MX10.BrainBird.NL.", "A")
    assert answers(r) == [("mx10.brainbird.nl.", "A", "198.18.1.10")]
    assert str(r.q.qname) == "MX10.BrainBird.NL."       # question echoed as asked
    r = query(server.port, "brainbird.nl.", "TXT")
    assert answers(r) == [("brainbird.nl.", "TXT", '"v=spf1 -all"')]


@pytest.mark.parametrize("tcp", TRANSPORTS, ids=["udp", "tcp"])
def test_nodata_has_soa(server: LabDNSServer, tcp: bool) -> None:
    r = query(server.port, "mail.skimbee.net.", "A", tcp=tcp)
    assert rcode(r) == "NOERROR" and r.rr == [] and r.header.aa == 1
    assert len(r.auth) == 1 and QTYPE[r.auth[0].rtype] == "SOA"
    assert str(r.auth[0].rname) == "skimbee.net."
    assert r.auth[0].ttl == 30            # min(SOA TTL, SOA minimum), RFC 2308


def test_nxdomain_has_soa(server: LabDNSServer) -> None:
    r = query(server.port, "nope.brainbird.nl.", "A")
    assert rcode(r) == "NXDOMAIN" and r.header.aa == 1 and r.rr == []
    assert QTYPE[r.auth[0].rtype] == "SOA" and str(r.auth[0].rname) == "brainbird.nl."


def test_empty_non_terminal_is_nodata(server: LabDNSServer) -> None:
    r = query(server.port, "1.18.198.in-addr.arpa.", "PTR")
    assert rcode(r) == "NOERROR" and r.rr == [] and len(r.auth) == 1


def test_nxdomain_outside_zones(server: LabDNSServer) -> None:
    # The lab's zones are its whole namespace: anything else does not exist.
    r = query(server.port, "example.com.", "A")
    assert rcode(r) == "NXDOMAIN" and r.header.aa == 0 and r.header.ra == 0
    assert r.rr == [] and r.auth == []


def test_longest_origin_wins(server: LabDNSServer) -> None:
    r = query(server.port, "host.sub.brainbird.nl.", "A")
    assert answers(r) == [("host.sub.brainbird.nl.", "A", "198.18.5.5")]
    r = query(server.port, "nothere.sub.brainbird.nl.", "A")
    assert rcode(r) == "NXDOMAIN" and r.auth[0].rdata.times[0] == 7   # sub zone's serial
    r = query(server.port, "sub.brainbird.nl.", "SOA")
    assert rcode(r) == "NOERROR" and answers(r)[0][1] == "SOA"


def test_cname_chased(server: LabDNSServer) -> None:
    r = query(server.port, "smtp.brainbird.nl.", "AAAA")
    assert answers(r) == [("smtp.brainbird.nl.", "CNAME", "mx10.brainbird.nl."),
                          ("mx10.brainbird.nl.", "AAAA", "2001:db8:1::10")]
    r = query(server.port, "smtp.brainbird.nl.", "CNAME")
    assert answers(r) == [("smtp.brainbird.nl.", "CNAME", "mx10.brainbird.nl.")]


def test_edns_and_udp_truncation_of_big_answers(tmp_path: Path) -> None:
    cfg = config_dict()
    cfg["zones"][0]["records"] += [
        {"name": "big.brainbird.nl.", "type": "TXT", "data": '"' + "x" * 200 + f'{i}"'}
        for i in range(5)]
    with LabDNSServer(parse_config(cfg)) as srv:
        r = query(srv.port, "big.brainbird.nl.", "TXT")
        assert r.header.tc == 1 and r.rr == []            # > 512 bytes without EDNS
        r = query(srv.port, "big.brainbird.nl.", "TXT", edns=True)
        assert r.header.tc == 0 and len(r.rr) == 5        # fits in 1232 with EDNS
        r = query(srv.port, "big.brainbird.nl.", "TXT", tcp=True)
        assert r.header.tc == 0 and len(r.rr) == 5


def test_query_log(server: LabDNSServer, tmp_path: Path) -> None:
    query(server.port, "mx10.brainbird.nl.", "AAAA")
    query(server.port, "mail.skimbee.net.", "A", addr="::1", tcp=True)
    query(server.port, "example.com.", "MX")
    server.log.sync()
    lines = read_log(str(tmp_path / "q.jsonl"))
    assert len(lines) == 3
    a, b, c = lines
    assert set(a) >= {"t_ms", "wall", "client", "client_port", "family", "transport", "id",
                      "name", "type", "rcode", "answers", "rule", "delay_ms"}
    assert a["client"] == "127.0.0.1" and a["family"] == "ipv4" and a["transport"] == "udp"
    assert a["name"] == "mx10.brainbird.nl." and a["type"] == "AAAA" and a["rcode"] == "NOERROR"
    assert a["answers"] == ["mx10.brainbird.nl. 60 AAAA 2001:db8:1::10"]
    assert a["rule"] is None and "requested_delay_ms" not in a and "delay_ms" in a
    assert isinstance(a["id"], int) and isinstance(a["client_port"], int)
    assert a["wall"].endswith("Z") and len(a["wall"]) == len("2024-01-01T00:00:00.000Z")
    assert 0 < a["t_ms"] <= time.monotonic() * 1000  # on the monotonic clock, never in the future
    assert b["client"] == "::1" and b["family"] == "ipv6" and b["transport"] == "tcp"
    assert b["rcode"] == "NOERROR" and b["answers"] == []
    assert c["rcode"] == "NXDOMAIN"
    assert a["t_ms"] <= b["t_ms"] <= c["t_ms"]


def test_malformed_packets_logged_and_answered_formerr(server: LabDNSServer, tmp_path: Path) -> None:
    assert raw_udp(server.port, b"\x01") is None                     # too short: ignored
    garbage = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05abc"
    reply = raw_udp(server.port, garbage)
    assert reply is not None
    rid, flags = struct.unpack("!HH", reply[:4])
    assert rid == 0x1234 and flags & 0x8000 and flags & 0xF == 1     # FORMERR
    response = DNSRecord.question("mx10.brainbird.nl.").reply().pack()
    assert raw_udp(server.port, response) is None                     # QR=1: ignored
    r = query(server.port, "mx10.brainbird.nl.", "A")                 # still alive
    assert rcode(r) == "NOERROR"
    server.log.sync()
    errs = [line for line in read_log(str(tmp_path / "q.jsonl")) if "error" in line]
    assert len(errs) == 3 and all(e["error"] for e in errs)


def test_tcp_pipelined_queries_on_one_connection(server: LabDNSServer) -> None:
    qa = DNSRecord.question("mx10.brainbird.nl.", "A")
    qb = DNSRecord.question("mx10.brainbird.nl.", "AAAA")
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        for q in (qa, qb):
            w = q.pack()
            s.sendall(struct.pack("!H", len(w)) + w)
        got = {}
        buf = b""
        while len(got) < 2:
            buf += s.recv(4096)
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                r = DNSRecord.parse(buf[2:2 + n])
                got[r.header.id] = r
                buf = buf[2 + n:]
    assert answers(got[qa.header.id]) == [("mx10.brainbird.nl.", "A", "198.18.1.10")]
    assert answers(got[qb.header.id]) == [("mx10.brainbird.nl.", "AAAA", "2001:db8:1::10")]


def test_dual_stack_wildcard_logs_mapped_as_ipv4(tmp_path: Path) -> None:
    cfg = parse_config(config_dict(listen=["::"]))
    with LabDNSServer(cfg, str(tmp_path / "q.jsonl")) as srv:
        query(srv.port, "mx10.brainbird.nl.", "A", addr="127.0.0.1")
        query(srv.port, "mx10.brainbird.nl.", "A", addr="::1")
        srv.log.sync()
        lines = read_log(str(tmp_path / "q.jsonl"))
    assert [(x["client"], x["family"]) for x in lines] == [("127.0.0.1", "ipv4"), ("::1", "ipv6")]


# -- config errors -------------------------------------------------------------

def _problems(raw: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        parse_config(raw)
    return [str(p) for p in e.value.problems]


def test_config_errors_are_all_reported_with_paths() -> None:
    cfg = config_dict(listen=["198.18.0.53", "not-an-ip"], port=70000, extra=1)
    cfg["zones"][0]["records"][0]["data"] = "198.18.1"
    cfg["zones"][0]["records"][1]["data"] = "198.18.1.10"         # A data in AAAA
    cfg["zones"][0]["records"][2]["type"] = "BOGUS"
    cfg["zones"][0]["records"][5]["data"] = "mx10.brainbird.nl."  # MX missing preference
    cfg["zones"][1]["records"][0]["name"] = "skimbee.org."
    cfg["zones"][2]["soa"] = {"mname": "ns.lab.test."}
    cfg["zones"][3]["origin"] = "skimbee.net."
    cfg["zones"][3]["records"] = []
    probs = _problems(cfg)
    text = "\n".join(probs)
    for path in ["listen[1]", "port", "extra", "zones[0].records[0].data",
                 "zones[0].records[1].data", "zones[0].records[2].type",
                 "zones[0].records[5].data", "zones[1].records[0].name",
                 "zones[2].soa.rname", "zones[2].soa.minimum", "zones[3].origin"]:
        assert any(p.startswith(path + ":") for p in probs), (path, text)
    assert all("\n" not in p and "Traceback" not in p for p in probs)


@pytest.mark.parametrize("raw,path", [
    ([], ""), ({"listen": [], "zones": []}, "listen"), ({"listen": ["::1"]}, "zones"),
    ({"listen": ["::1"], "zones": [{"origin": "x.", "soa": {}, "records": "no"}]}, "zones[0].records"),
    ({"listen": ["::1"], "port": True, "zones": []}, "port"),
    ({"listen": ["::1"], "zones": ["x"]}, "zones[0]"),
    ({"listen": ["::1"], "zones": [{"origin": "x", "soa": {}}]}, "zones[0].origin"),
])
def test_config_shape_errors(raw: object, path: str) -> None:
    probs = _problems(raw)
    assert any(p.startswith(path) for p in probs), probs


def test_soa_and_wildcard_records_rejected() -> None:
    cfg = config_dict()
    cfg["zones"][0]["records"] += [
        {"name": "brainbird.nl.", "type": "SOA", "data": "a. b. 1 2 3 4 5"},
        {"name": "*.brainbird.nl.", "type": "A", "data": "198.18.1.99"},
    ]
    probs = _problems(cfg)
    assert any(p.startswith("zones[0].records[13].type: SOA records come from") for p in probs), probs
    assert any(p.startswith("zones[0].records[14].name:") for p in probs), probs


def test_cname_conflict_and_duplicates() -> None:
    cfg = config_dict()
    cfg["zones"][0]["records"] += [
        {"name": "smtp.brainbird.nl.", "type": "A", "data": "198.18.1.99"},
        {"name": "mx30.brainbird.nl.", "type": "A", "data": "198.18.1.30"},
    ]
    probs = _problems(cfg)
    assert any("CNAME" in p for p in probs) and any("duplicate" in p for p in probs)


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(str(bad))


# -- the command line ---------------------------------------------------------

def _run_main(args: list[str], timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed.dnsserver", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_main_config_error_exit(tmp_path: Path) -> None:
    cfg = config_dict(port="x")
    path = tmp_path / "dns.json"
    path.write_text(json.dumps(cfg))
    res = _run_main(["--config", str(path)])
    assert res.returncode == 2
    assert f"{path}: port: must be an integer" in res.stderr and "Traceback" not in res.stderr


def test_main_bind_error_exit(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        path = tmp_path / "dns.json"
        path.write_text(json.dumps(config_dict(listen=["127.0.0.1"], port=port)))
        res = _run_main(["--config", str(path)])
    assert res.returncode == 1
    assert f"cannot bind 127.0.0.1 port {port}/udp" in res.stderr and "Traceback" not in res.stderr


def test_main_serves_and_prints_listening_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "dns.json"
    path.write_text(json.dumps(config_dict(port=port)))
    log = tmp_path / "log" / "q.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.dnsserver", "--config", str(path),
                             "--query-log", str(log)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith(f"testbed-dns: listening on 127.0.0.1:{port}, [::1]:{port}/udp+tcp")
        assert rcode(query(port, "mx10.brainbird.nl.", "A")) == "NOERROR"
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
    assert read_log(str(log))[0]["name"] == "mx10.brainbird.nl."
