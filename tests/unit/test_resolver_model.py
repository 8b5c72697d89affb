"""tb-resolver-model: the Mac OS X 10.6 resolver BEHAVIOUR MODEL.

The pure core on scripted arrival times, then the runtime against the
testbed's real DNS server on loopback (real UDP packets; delay rules on the
server). No timed assertions: the network tests check which answers the model
used, with delays far apart from the model's deadlines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from dnsserver_support import config_dict

from testbed.clientprogs import resolver_model as rm
from testbed.clientprogs.resolver_model import Reply, decide
from testbed.dnsserver.config import parse_config
from testbed.dnsserver.server import LabDNSServer

V6 = ("2001:db8:1::30",)
V4 = ("198.18.1.30",)
TIMEOUT_MS = 30_000.0


def nodata_a(at: float) -> Reply:
    return Reply("A", at, "NOERROR", ())


# -- the pure core: scripted timings ------------------------------------------------

@pytest.mark.parametrize(("aaaa_at", "used"), [(30, True), (110, False), (200, False)])
def test_negative_a_first_then_aaaa(aaaa_at: float, used: bool) -> None:
    # A NODATA at 10 ms: N floored at 50 ms, AAAA awaited until 100 ms.
    d = decide([nodata_a(10), Reply("AAAA", aaaa_at, "NOERROR", V6)], TIMEOUT_MS)
    if used:
        assert d.addresses == V6 and d.error is None and d.complete
        assert d.decided_ms == aaaa_at and d.used == ("A", "AAAA")
    else:
        assert d.addresses == () and d.error == "EAI_NONAME" and not d.complete
        assert d.decided_ms == 100.0 and d.used == ("A",)
        assert "negative A (NODATA)" in d.reason


@pytest.mark.parametrize(("aaaa_at", "expected"), [(150, V6 + V4), (170, V4)])
def test_a_at_80_then_aaaa(aaaa_at: float, expected: tuple[str, ...]) -> None:
    # A at 80 ms: AAAA awaited until 160 ms; AAAA first in the result, then A.
    d = decide([Reply("A", 80, "NOERROR", V4), Reply("AAAA", aaaa_at, "NOERROR", V6)], TIMEOUT_MS)
    assert d.addresses == expected and d.error is None
    assert d.decided_ms == (aaaa_at if len(expected) == 2 else 160.0)


def test_nxdomain_a_counts_as_the_a_answer() -> None:
    d = decide([Reply("A", 5, "NXDOMAIN"), Reply("AAAA", 300, "NOERROR", V6)], TIMEOUT_MS)
    assert d.error == "EAI_NONAME" and d.decided_ms == 100.0
    assert "NXDOMAIN" in d.reason


def test_aaaa_first_waits_for_a_up_to_the_total_timeout() -> None:
    late_a = Reply("A", 20_000, "NOERROR", V4)
    d = decide([Reply("AAAA", 10, "NOERROR", V6), late_a], TIMEOUT_MS)
    assert d.addresses == V6 + V4 and d.complete and d.decided_ms == 20_000
    # ... but not past it: the AAAA alone.
    d = decide([Reply("AAAA", 10, "NOERROR", V6), Reply("A", 31_000, "NOERROR", V4)], TIMEOUT_MS)
    assert d.addresses == V6 and not d.complete and d.decided_ms == TIMEOUT_MS


def test_negative_aaaa_first_then_a() -> None:
    d = decide([Reply("AAAA", 10, "NOERROR", ()), Reply("A", 500, "NOERROR", V4)], TIMEOUT_MS)
    assert d.addresses == V4 and d.complete and d.used == ("AAAA", "A")


def test_nothing_arrives() -> None:
    d = decide([], TIMEOUT_MS)
    assert d.addresses == () and d.error == "EAI_NONAME" and d.decided_ms == TIMEOUT_MS and d.used == ()


def test_both_negative_is_eai_noname_at_the_second_reply() -> None:
    d = decide([nodata_a(10), Reply("AAAA", 40, "NOERROR", ())], TIMEOUT_MS)
    assert d.error == "EAI_NONAME" and d.complete and d.decided_ms == 40


def test_total_timeout_caps_the_aaaa_wait() -> None:
    # A at 800 ms with a 1 s total timeout: 2N = 1600 ms is cut to 1000 ms.
    d = decide([Reply("A", 800, "NOERROR", V4), Reply("AAAA", 1100, "NOERROR", V6)], 1000.0)
    assert d.addresses == V4 and d.decided_ms == 1000.0
    # A reply after the total timeout is not seen at all.
    d = decide([Reply("A", 1200, "NOERROR", V4)], 1000.0)
    assert d.error == "EAI_NONAME" and d.used == ()


def test_servfail_and_truncated_replies_do_not_count() -> None:
    d = decide([Reply("A", 10, "SERVFAIL"), Reply("AAAA", 150, "NOERROR", V6)], TIMEOUT_MS)
    assert d.addresses == V6 and d.decided_ms == TIMEOUT_MS and d.used == ("AAAA",)
    d = decide([Reply("A", 10, "NOERROR", V4, truncated=True)], 1000.0)
    assert d.error == "EAI_NONAME"


def test_order_within_a_family_is_kept_and_repeats_ignored() -> None:
    many = ("198.18.1.3", "198.18.1.1", "198.18.1.2")
    d = decide([Reply("A", 10, "NOERROR", many), Reply("A", 12, "NOERROR", V4),
                Reply("AAAA", 20, "NOERROR", ("2001:db8::2", "2001:db8::1"))], TIMEOUT_MS)
    assert d.addresses == ("2001:db8::2", "2001:db8::1") + many


def test_code_rule_waits_n_plus_2n_plus_100ms() -> None:
    # The code under the comment: deadline = N + 2N + 100 ms.
    replies = [nodata_a(10), Reply("AAAA", 110, "NOERROR", V6)]
    assert decide(replies, TIMEOUT_MS, "code").addresses == V6  # deadline 130 ms
    assert decide(replies, TIMEOUT_MS, "comment").addresses == ()  # deadline 100 ms
    d = decide([Reply("A", 80, "NOERROR", V4), Reply("AAAA", 350, "NOERROR", V6)], TIMEOUT_MS, "code")
    assert d.addresses == V4 and d.decided_ms == 340.0
    # 2N + 100 ms beyond the remaining timeout: the original deadline stays.
    assert rm.aaaa_deadline_ms(600, 1000.0, "code") == 1000.0
    # It may reach past the total timeout when it fits the remaining time (as the C code does).
    assert rm.aaaa_deadline_ms(400, 1000.0, "code") == 1300.0


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="unknown rule"):
        decide([], 1.0, "fastest")


def test_partial_arrivals_give_the_current_deadline() -> None:
    # What the runtime asks while it waits: only the A so far.
    d = decide([Reply("A", 70, "NOERROR", V4)], TIMEOUT_MS)
    assert not d.complete and d.decided_ms == 140.0


# -- DNS packets --------------------------------------------------------------------

def test_query_packet_and_reply_parsing() -> None:
    from dnslib import DNSRecord

    raw = rm.build_query(0x1234, "mx30.brainbird.nl", "AAAA")
    q = DNSRecord.parse(raw)
    assert q.header.id == 0x1234 and q.header.rd == 1 and str(q.q.qname) == "mx30.brainbird.nl."
    assert q.q.qtype == 28
    reply = q.reply()
    from dnslib import AAAA, CNAME, RR

    reply.add_answer(RR("mx30.brainbird.nl.", 5, rdata=CNAME("x.brainbird.nl.")))
    reply.add_answer(RR("x.brainbird.nl.", 28, rdata=AAAA("2001:db8:1::30")))
    p = rm.parse_reply(reply.pack())
    assert (p.qid, p.rcode, p.qname, p.qtype, p.addresses) == (
        0x1234, "NOERROR", "mx30.brainbird.nl.", 28, ("2001:db8:1::30",))
    with pytest.raises(ValueError):
        rm.parse_reply(raw)  # a query, not a response


def test_nameserver_from_resolv_conf(tmp_path: Path) -> None:
    f = tmp_path / "resolv.conf"
    f.write_text("# lab\nsearch lab.test\nnameserver 198.18.0.53\nnameserver 2001:db8::53\n")
    assert rm.nameserver_from_resolv_conf(str(f)) == "198.18.0.53"
    f.write_text("search x\n")
    with pytest.raises(ValueError, match="no nameserver"):
        rm.nameserver_from_resolv_conf(str(f))


# -- the runtime against the real lab DNS server on loopback -------------------------

@pytest.fixture()
def dns(tmp_path: Path) -> Iterator[LabDNSServer]:
    srv = LabDNSServer(parse_config(config_dict(listen=["127.0.0.1"])), str(tmp_path / "q.jsonl"))
    srv.start()
    yield srv
    srv.stop()


def rules(srv: LabDNSServer, raw: list[dict]) -> None:
    assert srv.set_rules(raw) == []


def resolve(srv: LabDNSServer, name: str, timeout_s: float = 20.0) -> dict:
    return rm.run(name, "127.0.0.1", srv.port, timeout_s, "comment")


def test_runtime_both_answers_aaaa_first(dns: LabDNSServer) -> None:
    # The A 200 ms late: the AAAA first, then the model waits for the A (no race
    # against the 100 ms window on a busy machine).
    rules(dns, [{"preset": "a-late", "match": {"name": "mx30.brainbird.nl."}, "delay_ms": 200}])
    out = resolve(dns, "mx30.brainbird.nl")
    assert out["addresses"] == ["2001:db8:1::30", "198.18.1.30"] and out["error"] is None
    assert [q["type"] for q in out["queries"]] == ["A", "AAAA"]
    assert all(q["used"] and q["rcode"] == "NOERROR" for q in out["queries"])
    assert out["model"] == "macos-10.6" and out["kind"] == "behaviour model"


def test_runtime_empty_a_first_loses_the_late_aaaa(dns: LabDNSServer) -> None:
    # Slides 24-26: only AAAA exists, the empty A wins the race, AAAA 3 s late.
    rules(dns, [{"preset": "empty-a-first", "match": {"name": "mail.skimbee.net."}, "delay_ms": 3000}])
    out = resolve(dns, "mail.skimbee.net.")
    assert out["error"] == "EAI_NONAME" and out["addresses"] == []
    a, aaaa = out["queries"]
    assert a["rcode"] == "NOERROR" and a["addresses"] == [] and a["used"]
    assert aaaa["answered"] is None and not aaaa["used"]  # the model stopped before it came


def test_runtime_late_aaaa_leaves_ipv4_only(dns: LabDNSServer) -> None:
    rules(dns, [{"preset": "aaaa-late", "match": {"name": "mx30.brainbird.nl."}, "delay_ms": 3000}])
    out = resolve(dns, "mx30.brainbird.nl.")
    assert out["addresses"] == ["198.18.1.30"]
    assert [q["used"] for q in out["queries"]] == [True, False]


def test_runtime_aaaa_first_waits_for_the_late_a(dns: LabDNSServer) -> None:
    rules(dns, [{"preset": "a-late", "match": {"name": "mx30.brainbird.nl."}, "delay_ms": 300}])
    out = resolve(dns, "mx30.brainbird.nl.")
    assert out["addresses"] == ["2001:db8:1::30", "198.18.1.30"] and out["complete"]


def test_runtime_nothing_answers(dns: LabDNSServer) -> None:
    rules(dns, [{"match": {"name": "mx30.brainbird.nl."}, "action": {"drop": True}}])
    out = resolve(dns, "mx30.brainbird.nl.", timeout_s=0.5)
    assert out["error"] == "EAI_NONAME" and not any(q["used"] for q in out["queries"])
    assert all(q["answered"] is None and q["rcode"] is None for q in out["queries"])


def test_cli_prints_one_json_object(dns: LabDNSServer, tmp_path: Path) -> None:
    # mx20 has no A: its NODATA comes 200 ms after the AAAA, which the model waits for.
    rules(dns, [{"preset": "a-late", "match": {"name": "mx20.brainbird.nl."}, "delay_ms": 200}])
    prog = Path(rm.__file__)
    side = tmp_path / "resolver.json"
    p = subprocess.run([sys.executable, str(prog), "macos-10.6", "mx20.brainbird.nl", "--server", "127.0.0.1",
                        "--port", str(dns.port), "--timeout", "20", "--json-out", str(side)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert p.stdout.count("\n") == 1 and json.loads(side.read_text()) == out
    assert out["addresses"] == ["2001:db8:6::20"] and out["complete"]
    assert set(out) >= {"model", "models", "source", "name", "queries", "addresses", "error", "decided_ms"}
    assert "MODEL" in out["source"]
    p = subprocess.run([sys.executable, str(prog), "macos-10.6", "nonexistent.brainbird.nl", "--server",
                        "127.0.0.1", "--port", str(dns.port), "--timeout", "20"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and json.loads(p.stdout)["error"] == "EAI_NONAME"


# -- recorded runs in a real lab (tests/data/clients/python/README.md) ---------------

RECORDED = Path(__file__).resolve().parents[1] / "data" / "clients" / "python" / "bookworm"


def recorded_model_run(case: str) -> dict:
    rec = json.loads((RECORDED / f"{case}.json").read_text())
    return json.loads(rec["stdout"])


@pytest.mark.parametrize(("case", "addresses", "error"), [
    ("resolver-model-no-rules", ["2001:db8:1::30", "198.18.1.30"], None),
    ("resolver-model-empty-a-first-30ms", ["2001:db8:2::20"], None),
    ("resolver-model-empty-a-first-300ms", [], "EAI_NONAME"),
    ("resolver-model-aaaa-late-150ms", ["198.18.1.30"], None),
    ("resolver-model-aaaa-late-150ms-code-rule", ["198.18.1.30"], None),
    ("resolver-model-a-late-300ms", ["2001:db8:1::30", "198.18.1.30"], None),
    ("resolver-model-no-answer", [], "EAI_NONAME"),
])
def test_recorded_lab_runs_replay_through_the_core(case: str, addresses: list[str], error: str | None) -> None:
    out = recorded_model_run(case)
    assert (out["addresses"], out["error"]) == (addresses, error)
    # The pure core, fed the recorded arrival times, decides the same.
    start = min(q["sent"] for q in out["queries"])
    replies = [Reply(q["type"], (q["answered"] - start) * 1000.0, q["rcode"], tuple(q["addresses"]), q["truncated"])
               for q in out["queries"] if q["answered"] is not None]
    d = decide(replies, out["timeout_s"] * 1000.0, out["rule"])
    assert list(d.addresses) == addresses and d.error == error
    assert [q["type"] for q in out["queries"] if q["used"]] == sorted(d.used)


def test_recorded_glibc_control_keeps_the_late_aaaa() -> None:
    rec = json.loads((RECORDED / "resolver-glibc-empty-a-first-300ms.json").read_text())
    assert rec["rc"] == 0 and rec["stdout"].split()[0] == "2001:db8:2::20"
