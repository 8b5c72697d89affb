"""DNS behaviour rules on a live lab: mid-scenario changes, `testbed dns`, presets seen by real clients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import dns_queries, mail_log

REPO = Path(__file__).resolve().parents[2]


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "testbed.cli", *args], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_relay_defers_during_servfail_and_delivers_after(dns_lab) -> None:
    relay_log = mail_log(dns_lab, "relay")
    deferred = relay_log.index("status=deferred (Host or domain name not found. Name service error for name=brainbird.nl type=MX")
    delivered = relay_log.index("status=sent (250 2.0.0 Ok: queued as")
    assert deferred < delivered  # same message: deferred first, delivered after the rule was lifted
    mx = [q for q in dns_queries(dns_lab, "relay") if q["name"] == "brainbird.nl." and q["type"] == "MX"]
    rcodes = [q["rcode"] for q in mx]
    assert rcodes[0] == "SERVFAIL" and rcodes[-1] == "NOERROR"
    assert all(q["rule"] == "mx-servfail" for q in mx if q["rcode"] == "SERVFAIL")
    assert dns_lab.result.histories["m1"].state == "delivered"


def test_testbed_dns_cli_changes_live_rules(dns_lab, tmp_path) -> None:
    run_id = dns_lab.plan.run_id
    bad = tmp_path / "bad.yaml"
    bad.write_text("- {match: {client: 10.0.0.1/8}, action: {rcode: WHAT}}\n")
    res = run_cli("dns", run_id, "set", str(bad))
    assert res.returncode == 2
    assert "2 problems in the DNS rules" in res.stderr
    assert "bad.yaml:1: [0].match.client" in res.stderr and "bad.yaml:1: [0].action.rcode" in res.stderr
    good = tmp_path / "good.yaml"
    good.write_text("- {name: slow-aaaa, preset: aaaa-late, match: {name: mx10.brainbird.nl., client: client}, delay_ms: 400}\n")
    res = run_cli("dns", run_id, "set", str(good))
    assert res.returncode == 0, res.stdout + res.stderr
    listed = run_cli("dns", run_id, "list")
    assert "slow-aaaa" in listed.stdout
    client = dns_lab.host("client")
    # A real resolver client sees the delay on AAAA only.
    timing = client.check_output(
        "python3 -c \"import socket,time\n"
        "for f in (socket.AF_INET, socket.AF_INET6):\n"
        "    t=time.monotonic(); socket.getaddrinfo('mx10.brainbird.nl', 25, f); print(round((time.monotonic()-t)*1000))\"")
    a_ms, aaaa_ms = map(int, timing.split())
    assert aaaa_ms >= 400 > a_ms
    res = run_cli("dns", run_id, "clear")
    assert res.returncode == 0
    assert "slow-aaaa" not in run_cli("dns", run_id, "list").stdout
    applied = [q for q in dns_queries(dns_lab, "client") if q.get("rule", "") and q["rule"].startswith("slow-aaaa")]
    assert applied and all(q["type"] == "AAAA" and q["delay_ms"] >= 400 for q in applied)


def test_empty_a_first_preset_seen_by_a_parallel_resolver(dns_lab, tmp_path) -> None:
    """Slides 24-26: A answered at once and empty, AAAA late - a first-answer-wins client gets nothing."""
    run_id = dns_lab.plan.run_id
    rules = [{"name": "osx", "preset": "empty-a-first", "match": {"name": "imap.brainbird.nl.", "client": "client"},
              "delay_ms": 300}]
    assert run_cli("dns", run_id, "set", "-", stdin=json.dumps(rules)).returncode == 0
    try:
        out = dns_lab.host("client").check_output(
            "python3 -c \"import subprocess\n"
            "procs=[subprocess.Popen(['dig','+short','+tries=1',t,'imap.brainbird.nl'],stdout=subprocess.PIPE,text=True)"
            " for t in ('A','AAAA')]\n"
            "print(repr([p.communicate()[0].strip() for p in procs]))\"")
    finally:
        run_cli("dns", run_id, "clear")
    a_answer, aaaa_answer = eval(out)  # noqa: S307 - our own repr
    assert a_answer == "" and aaaa_answer == dns_lab.address("bb-imap", "ipv6")
    logged = [q for q in dns_queries(dns_lab, "client") if q["name"] == "imap.brainbird.nl." and q.get("rule", "").startswith("osx")]
    a_q = next(q for q in logged if q["type"] == "A")
    aaaa_q = next(q for q in logged if q["type"] == "AAAA")
    assert a_q["answers"] == [] and a_q["rcode"] == "NOERROR"
    assert aaaa_q["delay_ms"] >= 300 and a_q["delay_ms"] < 300
    assert abs(a_q["t_ms"] - aaaa_q["t_ms"]) < 1000  # asked together, answered apart
