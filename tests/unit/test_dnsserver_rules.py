"""Behaviour rules: parsing, matching, actions, presets, through a live server."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnslib import QTYPE, DNSRecord
from dnsserver_support import answers, config_dict, query, rcode, read_log

from testbed.dnsserver.config import parse_config
from testbed.dnsserver.errors import ConfigError
from testbed.dnsserver.presets import PRESETS
from testbed.dnsserver.rules import Query, RuleBook, RuleError, parse_rules
from testbed.dnsserver.server import LabDNSServer


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[LabDNSServer]:
    srv = LabDNSServer(parse_config(config_dict()), str(tmp_path / "q.jsonl"))
    srv.start()
    yield srv
    srv.stop()


def set_ok(srv: LabDNSServer, rules: list[dict[str, Any]]) -> None:
    errors = srv.set_rules(rules)
    assert errors == [], [str(e) for e in errors]


def errors_of(raw: Any) -> list[str]:
    rules, errors = parse_rules(raw)
    assert rules == [] and errors
    assert all(isinstance(e, RuleError) for e in errors)
    return [str(e) for e in errors]


def q(name: str, qtype: str = "A", client: str = "198.18.1.5", transport: str = "udp") -> Query:
    return Query(name, qtype, client, "ipv6" if ":" in client else "ipv4", transport)


# -- parsing --------------------------------------------------------------------

def test_brief_examples_parse() -> None:
    rules, errors = parse_rules([
        {"name": "slow-aaaa", "match": {"name": "*.brainbird.nl.", "type": "AAAA",
                                        "client": "198.18.0.0/15", "transport": "udp",
                                        "count": {"first": 1}},
         "action": {"delay_ms": 200, "rcode": "SERVFAIL"}},
        {"preset": "empty-a-first", "match": {"name": "mail.skimbee.net."}, "delay_ms": 200},
    ])
    assert errors == []
    assert [r.name for r in rules] == ["slow-aaaa", "empty-a-first/a", "empty-a-first/aaaa"]
    assert rules[0].action.delay_ms == 200 and rules[0].action.rcode == "SERVFAIL"
    assert rules[1].action.rcode == "NODATA" and rules[1].match.types == ("A",)
    assert rules[2].action.delay_ms == 200 and rules[2].match.types == ("AAAA",)
    assert rules[1].preset == rules[2].preset == "empty-a-first"


def test_all_problems_reported_with_paths() -> None:
    errs = errors_of([
        {"name": "ok", "match": {"name": "a.b."}, "action": {"delay_ms": 10}},
        {"match": {"name": 5, "type": ["A", "BOGUS"], "client": ["1.2.3.4", "nope", "10.0.0.1/8"],
                   "transport": "sctp", "count": {"first": 0, "per": "host"}, "colour": "red"},
         "action": {"delay_ms": "fast", "rcode": "MAYBE", "order": "random", "ttl": -1}},
        {"match": {"name": "a.b."}},
        {"match": {}, "action": {}},
        {"name": "ok", "action": {"drop": True}},
        "junk",
    ])
    expected = ["rules[1].match.name:", "rules[1].match.type[1]:", "rules[1].match.client[1]:",
                "rules[1].match.client[2]:", "rules[1].match.transport:",
                "rules[1].match.count.first:", "rules[1].match.count.per:",
                "rules[1].match.colour:", "rules[1].action.delay_ms:", "rules[1].action.rcode:",
                "rules[1].action.order:", "rules[1].action.ttl:", "rules[2].action:",
                "rules[3].action:", "rules[4].name:", "rules[5]:"]
    for prefix in expected:
        assert any(e.startswith(prefix) for e in errs), (prefix, errs)
    assert any("host bits" in e and "10.0.0.0/8" in e for e in errs)
    assert any("already used" in e for e in errs)


@pytest.mark.parametrize("action,fragment", [
    ({"drop": True, "delay_ms": 5}, "drop sends nothing"),
    ({"rcode": "SERVFAIL", "truncate": True}, "exclude each other"),
    ({"rcode": "NXDOMAIN", "ttl": 5}, "no answers"),
    ({"drop": "yes"}, "true or false"),
    ({"delay_ms": 60001}, "0 to 60000"),
    ({"delay_ms": True}, "milliseconds"),
])
def test_contradictory_or_bad_actions(action: dict[str, Any], fragment: str) -> None:
    errs = errors_of([{"match": {}, "action": action}])
    assert any(fragment in e for e in errs), errs


@pytest.mark.parametrize("item,fragment", [
    ({"preset": "nope"}, "unknown preset"),
    ({"preset": "aaaa-late", "match": {"type": "A"}}, "sets the query type itself"),
    ({"preset": "aaaa-late", "delay_ms": -5}, "0 to 60000"),
    ({"preset": "aaaa-timeout", "delay_ms": 5}, "unknown key"),
    ({"preset": "aaaa-late", "action": {"drop": True}}, "unknown key"),
    ({"preset": "empty-a-first", "match": {"client": "bad"}}, "rules[0].match.client"),
])
def test_preset_errors(item: dict[str, Any], fragment: str) -> None:
    errs = errors_of([item])
    assert any(fragment in e for e in errs), errs
    if fragment.startswith("rules[0].match"):
        assert len(errs) == 1      # reported once, not once per expanded rule


def test_not_a_list() -> None:
    assert errors_of({"match": {}}) == ["rules: must be a list of rules, got dict"]
    rules, errors = parse_rules({"rules": [{"preset": "round-robin"}]})
    assert errors == [] and rules[0].name == "round-robin"


def test_default_names_unique() -> None:
    rules, errors = parse_rules([{"preset": "aaaa-late"}, {"preset": "aaaa-late"},
                                 {"match": {}, "action": {"ttl": 1}}])
    assert errors == []
    assert [r.name for r in rules] == ["aaaa-late", "aaaa-late-2", "rule-3"]


def test_every_preset_expands_to_valid_rules() -> None:
    for name in PRESETS:
        rules, errors = parse_rules([{"preset": name, "match": {"name": "x.test."}}])
        assert errors == [] and rules, name
        assert all(r.preset == name for r in rules)


# -- matching -------------------------------------------------------------------

def _book(*rules: dict[str, Any]) -> RuleBook:
    parsed, errors = parse_rules(list(rules))
    assert errors == [], errors
    return RuleBook(parsed)


def _winner(book: RuleBook, query_: Query) -> str | None:
    rule = book.decide(query_)
    return rule.name if rule else None


def test_match_name_exact_pattern_and_case() -> None:
    book = _book({"name": "exact", "match": {"name": "Mail.Skimbee.NET"}, "action": {"ttl": 1}},
                 {"name": "pat", "match": {"name": "*.brainbird.nl."}, "action": {"ttl": 1}},
                 {"name": "list", "match": {"name": ["a.test.", "mx?.b.test."]}, "action": {"ttl": 1}})
    assert _winner(book, q("mail.skimbee.net.")) == "exact"
    assert _winner(book, q("mx10.brainbird.nl.")) == "pat"
    assert _winner(book, q("a.b.brainbird.nl.")) == "pat"
    assert _winner(book, q("brainbird.nl.")) is None       # "*." needs at least one label
    assert _winner(book, q("mx1.b.test.")) == "list"
    assert _winner(book, q("mx10.b.test.")) is None


def test_match_type_client_transport() -> None:
    book = _book({"name": "v6", "match": {"client": "ipv6", "type": ["A", "AAAA"]}, "action": {"ttl": 1}},
                 {"name": "net", "match": {"client": ["198.18.0.0/15"], "transport": "tcp"},
                  "action": {"ttl": 1}},
                 {"name": "host", "match": {"client": "2001:db8::5"}, "action": {"ttl": 1}})
    assert _winner(book, q("x.", "AAAA", client="2001:db8::7")) == "v6"
    assert _winner(book, q("x.", "MX", client="2001:db8::7")) is None
    assert _winner(book, q("x.", "MX", client="2001:db8::5")) == "host"
    assert _winner(book, q("x.", "A", client="198.19.255.1", transport="tcp")) == "net"
    assert _winner(book, q("x.", "A", client="198.19.255.1", transport="udp")) is None
    assert _winner(book, q("x.", "A", client="198.20.0.1", transport="tcp")) is None


def test_first_match_wins() -> None:
    book = _book({"name": "one", "match": {"name": "a.test."}, "action": {"ttl": 1}},
                 {"name": "two", "match": {}, "action": {"ttl": 2}})
    assert _winner(book, q("a.test.")) == "one"
    assert _winner(book, q("b.test.")) == "two"


def test_count_first_after_and_independent_of_order() -> None:
    book = _book({"name": "first", "match": {"name": "a.test.", "count": {"first": 1}},
                  "action": {"rcode": "SERVFAIL"}},
                 {"name": "second", "match": {"name": "a.test.", "count": {"after": 1, "first": 1}},
                  "action": {"drop": True}},
                 {"name": "rest", "match": {"name": "a.test."}, "action": {"ttl": 9}})
    assert [_winner(book, q("a.test.")) for _ in range(4)] == ["first", "second", "rest", "rest"]
    assert [r.hits for r in book.rules] == [1, 1, 2]


def test_count_per_client() -> None:
    book = _book({"name": "c", "match": {"count": {"first": 1, "per": ["client", "type"]}},
                  "action": {"ttl": 1}})
    assert _winner(book, q("a.", "A", client="10.0.0.1")) == "c"
    assert _winner(book, q("a.", "A", client="10.0.0.1")) is None
    assert _winner(book, q("a.", "AAAA", client="10.0.0.1")) == "c"
    assert _winner(book, q("a.", "A", client="10.0.0.2")) == "c"


# -- actions through the server ---------------------------------------------------

def timed(port: int, name: str, qtype: str, **kw: Any) -> tuple[float, DNSRecord]:
    t0 = time.monotonic()
    r = query(port, name, qtype, **kw)
    return (time.monotonic() - t0) * 1000, r


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_delay(server: LabDNSServer, tcp: bool) -> None:
    set_ok(server, [{"name": "slow", "match": {"name": "mx10.brainbird.nl.", "type": "AAAA"},
                     "action": {"delay_ms": 120}}])
    # Never early; how close to 120 ms is the benchmark's business (scripts/bench_dns_delay.py).
    ms, r = timed(server.port, "mx10.brainbird.nl.", "AAAA", tcp=tcp)
    assert ms >= 119 and answers(r) == [("mx10.brainbird.nl.", "AAAA", "2001:db8:1::10")]
    _, r = timed(server.port, "mx10.brainbird.nl.", "A", tcp=tcp)
    assert r.rr
    server.log.sync()
    lines = read_log(server.log_path)
    line = [x for x in lines if x["rule"] == "slow"][0]
    assert line["requested_delay_ms"] == 120 and "delay_ms" in line  # accuracy: scripts/bench_dns_delay.py
    undelayed = [x for x in lines if x["type"] == "A"][0]
    assert undelayed["rule"] is None and "requested_delay_ms" not in undelayed


def test_delays_do_not_block_other_queries(server: LabDNSServer) -> None:
    # An order, not a speed: the other query is answered while the delayed one is still
    # waiting. The delay is long enough that only a hung server would fail this.
    set_ok(server, [{"match": {"name": "mx10.brainbird.nl."}, "action": {"delay_ms": 2000}}])
    done: list[float] = []
    t = threading.Thread(target=lambda: done.append(timed(server.port, "mx10.brainbird.nl.", "A", timeout=10)[0]))
    t.start()
    time.sleep(0.02)
    _, r = timed(server.port, "mx30.brainbird.nl.", "A")
    assert r.rr and not done
    t.join()
    assert done[0] >= 1999


def test_drop(server: LabDNSServer) -> None:
    set_ok(server, [{"name": "gone", "match": {"type": "AAAA"}, "action": {"drop": True}}])
    with pytest.raises(socket.timeout):
        query(server.port, "mx10.brainbird.nl.", "AAAA", timeout=0.3)
    with pytest.raises(socket.timeout):
        query(server.port, "mx10.brainbird.nl.", "AAAA", timeout=0.3, tcp=True)
    assert rcode(query(server.port, "mx10.brainbird.nl.", "A")) == "NOERROR"
    server.log.sync()
    drops = [x for x in read_log(server.log_path) if x["rule"] == "gone"]
    assert len(drops) == 2 and all(x["dropped"] and x["delay_ms"] is None for x in drops)


@pytest.mark.parametrize("code", ["SERVFAIL", "REFUSED", "FORMERR", "NOTIMP"])
def test_error_rcodes(server: LabDNSServer, code: str) -> None:
    set_ok(server, [{"match": {"name": "mx10.brainbird.nl."}, "action": {"rcode": code}}])
    r = query(server.port, "mx10.brainbird.nl.", "A")
    assert rcode(r) == code and r.rr == [] and r.auth == []


def test_nxdomain_and_nodata_look_real(server: LabDNSServer) -> None:
    set_ok(server, [{"match": {"name": "mx10.brainbird.nl.", "type": "A"}, "action": {"rcode": "NXDOMAIN"}},
                    {"match": {"name": "mx10.brainbird.nl.", "type": "AAAA"}, "action": {"rcode": "NODATA"}}])
    r = query(server.port, "mx10.brainbird.nl.", "A")
    assert rcode(r) == "NXDOMAIN" and r.header.aa and QTYPE[r.auth[0].rtype] == "SOA"
    r = query(server.port, "mx10.brainbird.nl.", "AAAA")
    assert rcode(r) == "NOERROR" and r.rr == [] and QTYPE[r.auth[0].rtype] == "SOA"


def test_truncate_udp_then_full_over_tcp(server: LabDNSServer) -> None:
    set_ok(server, [{"preset": "tcp-fallback", "match": {"name": "brainbird.nl."}}])
    r = query(server.port, "brainbird.nl.", "MX")
    assert r.header.tc == 1 and r.rr == []
    r = query(server.port, "brainbird.nl.", "MX", tcp=True)
    assert r.header.tc == 0 and len(r.rr) == 3
    server.log.sync()
    udp, tcp = [x for x in read_log(server.log_path) if x["name"] == "brainbird.nl."]
    assert udp["tc"] is True and udp["answers"] == [] and udp["rule"] == "tcp-fallback"
    assert "tc" not in tcp and len(tcp["answers"]) == 3


def test_round_robin_and_ttl(server: LabDNSServer) -> None:
    got = [[a[2] for a in answers(query(server.port, "rr.brainbird.nl."))] for _ in range(2)]
    assert got[0] == got[1] == ["198.18.1.1", "198.18.1.2", "198.18.1.3"]   # fixed by default
    set_ok(server, [{"preset": "round-robin", "match": {"name": "rr.brainbird.nl."}},
                    {"match": {"name": "smtp.brainbird.nl."}, "action": {"ttl": 7}}])
    got = [[a[2] for a in answers(query(server.port, "rr.brainbird.nl."))] for _ in range(4)]
    assert got == [["198.18.1.1", "198.18.1.2", "198.18.1.3"],
                   ["198.18.1.2", "198.18.1.3", "198.18.1.1"],
                   ["198.18.1.3", "198.18.1.1", "198.18.1.2"],
                   ["198.18.1.1", "198.18.1.2", "198.18.1.3"]]
    r = query(server.port, "smtp.brainbird.nl.", "A")
    assert [rr.ttl for rr in r.rr] == [7, 7] and len(r.rr) == 2        # CNAME + A
    assert query(server.port, "mx10.brainbird.nl.", "A").rr[0].ttl == 60  # zone untouched


def test_rules_apply_outside_zones(server: LabDNSServer) -> None:
    set_ok(server, [{"match": {"name": "example.com."}, "action": {"delay_ms": 50}}])
    ms, r = timed(server.port, "example.com.", "A")
    assert rcode(r) == "NXDOMAIN" and ms >= 49


# -- presets: the study's races -------------------------------------------------

def race(port: int, name: str, addr: str = "127.0.0.1") -> list[tuple[str, float, DNSRecord]]:
    """Send A and AAAA at the same moment (like mDNSResponder); return replies in arrival order."""
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.settimeout(30)  # only a hang guard: a loaded machine may be slow, never wrong
        qa, qaaaa = DNSRecord.question(name, "A"), DNSRecord.question(name, "AAAA")
        qaaaa.header.id = (qa.header.id + 1) % 65536
        qs = {qa.header.id: "A", qaaaa.header.id: "AAAA"}
        t0 = time.monotonic()
        s.sendto(qa.pack(), (addr, port))
        s.sendto(qaaaa.pack(), (addr, port))
        out = []
        while len(out) < 2:
            r = DNSRecord.parse(s.recv(4096))
            out.append((qs[r.header.id], (time.monotonic() - t0) * 1000, r))
    return out


def test_preset_empty_a_first(server: LabDNSServer) -> None:
    set_ok(server, [{"preset": "empty-a-first", "match": {"name": "mail.skimbee.net."}, "delay_ms": 150}])
    (t1, ms1, r1), (t2, ms2, r2) = race(server.port, "mail.skimbee.net.")
    assert t1 == "A" and rcode(r1) == "NOERROR" and r1.rr == []
    assert t2 == "AAAA" and answers(r2) == [("mail.skimbee.net.", "AAAA", "2001:db8:2::25")]
    assert ms2 >= 149 and ms1 <= ms2
    # A first-answer-wins client (Mac OS X 10.6) would conclude: no address.
    server.log.sync()
    lines = {x["type"]: x for x in read_log(server.log_path)}
    assert lines["A"]["rule"] == "empty-a-first/a" and lines["AAAA"]["rule"] == "empty-a-first/aaaa"
    assert "requested_delay_ms" not in lines["A"] and lines["AAAA"]["requested_delay_ms"] == 150


def test_preset_empty_a_first_even_when_a_exists(server: LabDNSServer) -> None:
    set_ok(server, [{"preset": "empty-a-first", "match": {"name": "mx10.brainbird.nl."}, "delay_ms": 50}])
    (t1, _ms, r1), (t2, _ms2, r2) = race(server.port, "mx10.brainbird.nl.")
    assert (t1, r1.rr, t2) == ("A", [], "AAAA") and len(r2.rr) == 1


@pytest.mark.parametrize("preset,first,late", [("aaaa-late", "A", "AAAA"), ("a-late", "AAAA", "A")])
def test_preset_late(server: LabDNSServer, preset: str, first: str, late: str) -> None:
    set_ok(server, [{"preset": preset, "match": {"name": "mx10.brainbird.nl."}, "delay_ms": 100}])
    (t1, ms1, r1), (t2, ms2, r2) = race(server.port, "mx10.brainbird.nl.", addr="::1")
    assert (t1, t2) == (first, late) and r1.rr and r2.rr
    assert ms2 >= 99 and ms1 <= ms2


def test_preset_aaaa_servfail_and_timeout(server: LabDNSServer) -> None:
    set_ok(server, [{"preset": "aaaa-servfail", "match": {"name": "mx10.brainbird.nl."}},
                    {"preset": "aaaa-timeout", "match": {"name": "mx30.brainbird.nl."}}])
    assert rcode(query(server.port, "mx10.brainbird.nl.", "AAAA")) == "SERVFAIL"
    assert rcode(query(server.port, "mx10.brainbird.nl.", "A")) == "NOERROR"
    with pytest.raises(socket.timeout):
        query(server.port, "mx30.brainbird.nl.", "AAAA", timeout=0.3)


# -- rules in the config ------------------------------------------------------------

def test_config_rules_loaded_and_validated() -> None:
    cfg = config_dict(rules=[{"preset": "aaaa-late", "match": {"name": "mx10.brainbird.nl."}}])
    assert [r.name for r in parse_config(cfg).rules] == ["aaaa-late"]
    cfg = config_dict(rules=[{"preset": "aaaa-late", "delay_ms": "x"}, {"match": {}, "action": {"rcode": 1}}])
    with pytest.raises(ConfigError) as e:
        parse_config(cfg)
    paths = [p.path for p in e.value.problems]
    assert paths == ["rules[0].delay_ms", "rules[1].action.rcode"]


# -- runtime changes -------------------------------------------------------------------

def test_set_add_clear_list(server: LabDNSServer) -> None:
    set_ok(server, [{"name": "a", "match": {"name": "mx10.brainbird.nl."}, "action": {"rcode": "SERVFAIL"}}])
    assert rcode(query(server.port, "mx10.brainbird.nl.", "A")) == "SERVFAIL"
    bad = server.set_rules([{"name": "b", "match": {"client": "x"}, "action": {"drop": True}}])
    assert [e.path for e in bad] == ["rules[0].match.client"]
    assert [r["name"] for r in server.list_rules()] == ["a"]           # unchanged
    assert server.add_rules([{"name": "a", "match": {}, "action": {"ttl": 1}}])[0].message.startswith("name 'a'")
    assert server.add_rules([{"match": {"name": "mx30.brainbird.nl."}, "action": {"rcode": "REFUSED"}}]) == []
    listed = server.list_rules()
    assert [r["name"] for r in listed] == ["a", "rule-2"] and listed[0]["hits"] == 1
    assert rcode(query(server.port, "mx30.brainbird.nl.", "A")) == "REFUSED"
    # list output round-trips through set
    assert server.set_rules(listed) == [] and [r["name"] for r in server.list_rules()] == ["a", "rule-2"]
    server.clear_rules()
    assert server.list_rules() == []
    assert rcode(query(server.port, "mx10.brainbird.nl.", "A")) == "NOERROR"


def test_rule_change_does_not_affect_in_flight_delays(server: LabDNSServer) -> None:
    set_ok(server, [{"match": {"name": "mx10.brainbird.nl."}, "action": {"delay_ms": 200}}])
    out: list[float] = []
    t = threading.Thread(target=lambda: out.append(timed(server.port, "mx10.brainbird.nl.", "A")[0]))
    t.start()
    time.sleep(0.05)
    server.clear_rules()
    t.join()
    assert out[0] >= 199
    timed(server.port, "mx10.brainbird.nl.", "A")
    server.log.sync()
    after = read_log(server.log_path)[-1]
    assert after["rule"] is None and "requested_delay_ms" not in after


def test_tcp_delayed_replies_out_of_order_on_one_connection(server: LabDNSServer) -> None:
    set_ok(server, [{"preset": "aaaa-late", "match": {"name": "mx10.brainbird.nl."}, "delay_ms": 100}])
    qaaaa, qa = DNSRecord.question("mx10.brainbird.nl.", "AAAA"), DNSRecord.question("mx10.brainbird.nl.", "A")
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        for qq in (qaaaa, qa):
            w = qq.pack()
            s.sendall(struct.pack("!H", len(w)) + w)
        order = []
        buf = b""
        while len(order) < 2:
            buf += s.recv(4096)
            while len(buf) >= 2 and len(buf) >= 2 + struct.unpack("!H", buf[:2])[0]:
                n = struct.unpack("!H", buf[:2])[0]
                order.append(QTYPE[DNSRecord.parse(buf[2:2 + n]).q.qtype])
                buf = buf[2 + n:]
    assert order == ["A", "AAAA"]


def test_tcp_delayed_reply_survives_client_half_close(server: LabDNSServer) -> None:
    set_ok(server, [{"match": {"name": "mx10.brainbird.nl."}, "action": {"delay_ms": 100}}])
    w = DNSRecord.question("mx10.brainbird.nl.", "A").pack()
    with socket.create_connection(("127.0.0.1", server.port), timeout=3) as s:
        s.sendall(struct.pack("!H", len(w)) + w)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert len(data) > 2 and DNSRecord.parse(data[2:]).rr
