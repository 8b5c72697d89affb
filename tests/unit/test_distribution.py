"""Repeated client steps, server-side connections and the distribution expectation (no Docker)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from testbed.adapters import ClientOutcome, mta_adapter
from testbed.clientrun import ClientResult
from testbed.clienttrace import parse_runs, parse_trace
from testbed.errors import TopologyError
from testbed.events import ServerConnection
from testbed.model import load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.render import host_files
from testbed.serverside import attribute
from testbed.verdict import ELSEWHERE, FAILED, UNLOGGED, Observation, distribution_counts, evaluate

LAB = """
name: rr
segments:
  office: {family: dual}
  dc: {family: dual}
hosts:
  router: {kind: router, segments: [office, dc], id: 2}
  dns: {kind: dns, segment: dc, id: 53}
  mx-a: {kind: mta, segment: office, fqdn: mx-a.example.net, id: 25}
  mx-b: {kind: mta, segment: dc, fqdn: mx-b.example.net, id: 26, addresses: {dc: [36]}}
  c: {kind: client, software: curl, segment: office, id: 10}
domains:
  example.net: {mx: {mx-a: 10, mx-b: 10}}
dns:
  names:
    smtp.example.net: [mx-a, mx-b]
"""


def lab(tmp_path: Path, tail: str = ""):
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(LAB) + textwrap.dedent(tail))
    return load_topology(path)


def problems(tmp_path: Path, tail: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        lab(tmp_path, tail)
    return [str(p) for p in info.value.problems]


# --- tb-trace --repeat output -------------------------------------------------------------------


def syn(t: float, src: str, sport: int, dst: str, flags: str = "S") -> str:
    return f"{t:.6f} eth0 Out IP6 {src}.{sport} > {dst}.25: Flags [{flags}], seq {sport}, win 64800, length 0"


def synack(t: float, src: str, dst: str, dport: int) -> str:
    return f"{t:.6f} eth0 In  IP6 {src}.25 > {dst}.{dport}: Flags [S.], seq 1, ack {dport + 1}, win 64260, length 0"


def repeated_trace(first_addresses: list[str]) -> str:
    """Three runs; run i connects to first_addresses[i] from port 40000+i."""
    runs, lookups, packets = [], [], []
    for i, dst in enumerate(first_addresses):
        t0 = 100.0 + i
        runs.append({"started": t0, "ended": t0 + 0.5, "rc": 0, "stdout": "", "stderr": "", "resolver": None})
        lookups.append({"t": t0 + 0.01, "dur_ms": 1.0, "node": "smtp.example.net", "addresses": [dst], "rc": 0})
        packets += [syn(t0 + 0.02, "2001:db8:1::10", 40000 + i, dst), synack(t0 + 0.03, dst, "2001:db8:1::10", 40000 + i)]
    out = {"version": 1, "started": 100.0, "ended": 102.5, "rc": 0, "stdout": "", "stderr": "",
           "lookups": lookups, "packets": packets, "resolver": None, "runs": runs}
    return json.dumps(out)


def test_repeat_output_splits_into_one_trace_per_run() -> None:
    text = repeated_trace(["2001:db8:1::25", "2001:db8:2::26", "2001:db8:1::25"])
    traces = parse_runs(text, {"2001:db8:1::10"})
    assert [t.connected.address for t in traces] == ["2001:db8:1::25", "2001:db8:2::26", "2001:db8:1::25"]
    assert [t.lookups[0].addresses for t in traces] == [["2001:db8:1::25"], ["2001:db8:2::26"], ["2001:db8:1::25"]]
    assert all(t.connected.source == "2001:db8:1::10" for t in traces)
    assert [t.connected.source_port for t in traces] == [40000, 40001, 40002]
    # The whole span, for callers that want one trace.
    assert len(parse_trace(text, {"2001:db8:1::10"}).attempts) == 3


def test_a_trace_without_runs_is_one_run() -> None:
    text = json.loads(repeated_trace(["2001:db8:1::25"]))
    del text["runs"]
    assert len(parse_runs(json.dumps(text), set())) == 1


def test_malformed_runs_are_one_clear_error() -> None:
    text = json.loads(repeated_trace(["2001:db8:1::25"]))
    text["runs"][0]["rc"] = "zero"
    with pytest.raises(ValueError, match=r"runs\[0\]\.rc"):
        parse_runs(json.dumps(text), set())


def test_real_resolver_program_lookups_are_named_after_it() -> None:
    text = json.loads(repeated_trace(["2001:db8:1::25"]))
    text["runs"][0]["resolver"] = {"resolver": "c-ares", "addresses": ["2001:db8:1::25"]}
    text["lookups"][0]["override"] = True
    [trace] = parse_runs(json.dumps(text), set())
    assert trace.lookups[0].resolver == "c-ares"


# --- the servers' own logs ---------------------------------------------------------------------


def test_postfix_connections_carry_the_client_port() -> None:
    log = ("Dec  2 06:01:02 mx-a postfix/smtpd[123]: connect from office.example.org[2001:db8:1::10]:40000\n"
           "Dec  2 06:01:02 mx-a postfix/smtpd[123]: disconnect from office.example.org[2001:db8:1::10]:40000 quit=1\n"
           "Dec  2 06:01:03 mx-a postfix/smtp[124]: connect to x.example[2001:db8::9]:25: Connection refused\n")
    [conn] = mta_adapter("postfix").parse_connections(log, "mx-a")
    assert (conn.host, conn.client_address, conn.client_port) == ("mx-a", "2001:db8:1::10", 40000)


def test_postfix_reject_lines_with_a_port_still_parse() -> None:
    line = ("Dec  2 06:01:02 mx-a postfix/smtpd[123]: NOQUEUE: reject: RCPT from unknown[2001:db8:1::99]:40000: "
            "554 5.7.1 <u@example.org>: Relay access denied; from=<c@example.org> to=<u@example.org> proto=ESMTP "
            "helo=<c>")
    [event] = mta_adapter("postfix").parse_log(line, "mx-a")
    assert event.kind == "rejected" and event.relay_address == "2001:db8:1::99" and event.status == "5.7.1"


def test_exim_and_sendmail_connections() -> None:
    """Lines from the round-robin lab run with --mta exim and --mta sendmail (bookworm, 2026-12-02)."""
    exim = ("2026-12-02 06:12:00.798 SMTP connection from [198.18.8.10]:60082 I=[198.18.7.26]:25 "
            "(TCP/IP connection count = 1)\n"
            "2026-12-02 06:12:00.805 SMTP connection from branch.example.org (branch) [198.18.8.10]:60082 "
            "I=[198.18.7.26]:25 closed by QUIT\n")
    [e] = mta_adapter("exim").parse_connections(exim, "mx-b")  # the closing line is not a second connection
    assert (e.client_address, e.client_port) == ("198.18.8.10", 60082)
    assert e.time == pytest.approx(1796191920.798)
    sendmail = ("2026-12-02T06:14:40.923268+00:00 mx-b.example.net sendmail[86]: NOQUEUE: connect from "
                "branch.example.org [198.18.3.10]\n"
                "2026-12-02T06:14:41.136898+00:00 mx-b.example.net sendmail[87]: NOQUEUE: connect from "
                "office.example.org [IPv6:2001:db8:1:0:0:0:0:10]\n")
    s1, s2 = mta_adapter("sendmail").parse_connections(sendmail, "mx-b")
    assert (s1.client_address, s1.client_port) == ("198.18.3.10", None) and s1.time == pytest.approx(1796192080.923268)
    assert s2.client_address == "2001:db8:1::10"


# --- attribution and the distribution ------------------------------------------------------------


def results_from(text: str, step: str = "rr") -> list[ClientResult]:
    out = []
    for i, trace in enumerate(parse_runs(text, {"2001:db8:1::10"}), 1):
        out.append(ClientResult(
            id=f"{step}.{i}", host="c", software="curl", version="curl 8", model_of=None, model_source=None,
            resolver="glibc", resolver_model_of=None, action="connect", protocol="smtp", server="smtp.example.net",
            port=25, family="any", timeout_s=3.0, labels={}, trace=trace, outcome=ClientOutcome(True, "", ""),
            step=step, run=i))
    return out


def test_connections_join_on_port_or_on_time_and_are_claimed_once() -> None:
    results = results_from(repeated_trace(["2001:db8:1::25", "2001:db8:2::26", "2001:db8:2::26"]))
    conns = [
        ServerConnection("mx-a", "2001:db8:1::10", 40000),
        ServerConnection("mx-b", "2001:db8:1::10", 40001),
        # Sendmail-style: no port, a time close to run 3's connection.
        ServerConnection("mx-c", "2001:db8:1::10", None, 102.04),
        ServerConnection("mx-c", "2001:db8:1::10", None, 102.05),  # a second line may not claim it again
    ]
    got = attribute(results, conns)
    assert got == {"rr.1": {0: "mx-a"}, "rr.2": {0: "mx-b"}, "rr.3": {0: "mx-c"}}


def distribution(tail: str, tmp_path: Path, results: list[ClientResult]):
    top = lab(tmp_path, tail)
    plan = plan_lab(top, "t1", EngineCaps.parse("20.10.24"))
    obs = Observation(histories={}, mailboxes={}, queues={}, dns_queries=[], logs={},
                      clients={r.id: r for r in results})
    return evaluate(plan, obs)


SCENARIO = """
scenario:
  - client: {id: rr, host: c, server: smtp.example.net, repeat: 4}
"""


def test_distribution_counts_and_checks(tmp_path: Path) -> None:
    results = results_from(repeated_trace(["2001:db8:1::25"] * 3 + ["2001:db8:2::26"]))
    for r, host in zip(results, ["mx-a", "mx-a", "mx-a", None]):
        r.received_by = {0: host} if host else {}
    tail = SCENARIO + textwrap.dedent("""
    expect:
      - distribution: {steps: rr, servers: [mx-a, mx-b], all_to: mx-a}
      - distribution: {steps: "rr*", servers: [mx-a, mx-b], share: {mx-a: {min: 70, max: 80}}, count: 3}
      - distribution: {steps: rr, servers: [mx-a, mx-b], each: {min: 20}}
    """)
    checks = distribution(tail, tmp_path, results)
    assert [c.status for c in checks] == ["fail", "pass", "fail"]
    assert checks[1].histogram == {"mx-a": 3, "mx-b": 0, UNLOGGED: 1}
    assert "expected all 4 at mx-a" in checks[0].detail
    assert "mx-b got 0%, expected 20-100%" in checks[2].detail


def test_distribution_buckets() -> None:
    from testbed.model import DistributionCheck

    results = results_from(repeated_trace(["2001:db8:1::25", "2001:db8:2::26", "2001:db8:2::26"]))
    results[0].received_by = {0: "mx-a"}
    results[1].received_by = {0: "mx-z"}
    results[2].trace.attempts.clear()
    obs = Observation(histories={}, mailboxes={}, queues={}, dns_queries=[], logs={},
                      clients={r.id: r for r in results})
    counts = distribution_counts(obs, DistributionCheck(steps="rr", servers=["mx-a"]))
    assert counts == {"mx-a": 1, ELSEWHERE: 1, FAILED: 1}


def test_distribution_problems_are_reported_once_each(tmp_path: Path) -> None:
    got = problems(tmp_path, SCENARIO + textwrap.dedent("""
    expect:
      - distribution: {steps: nope, servers: [mx-a, mx-q], all_to: mx-b, share: {dns: {min: 5}}}
      - distribution: {steps: rr, messages: m1, servers: [mx-a]}
      - distribution: {steps: rr, servers: [mx-a], each: {min: 60, max: 40}}
    """))
    text = "\n".join(got)
    assert "unknown client step 'nope'" in text
    assert "unknown host 'mx-q'" in text
    assert "'mx-b' is not one of the servers counted" in text
    assert "'dns' is not one of the servers counted" in text
    assert "exactly one of them" in text
    assert "min 60 is above max 40" in text


def test_repeat_is_bounded(tmp_path: Path) -> None:
    got = problems(tmp_path, "scenario:\n  - client: {id: rr, host: c, server: mx-a, repeat: 0}\n")
    assert any("repeat" in p for p in got)


# --- extra addresses and names served by several hosts ---------------------------------------


def test_extra_addresses_are_planned_named_and_rendered(tmp_path: Path) -> None:
    plan = plan_lab(lab(tmp_path), "t1", EngineCaps.parse("20.10.24"))
    mx_b = plan.hosts["mx-b"]
    assert [str(a) for a in mx_b.addresses()] == ["198.18.2.26", "198.18.2.36", "2001:db8:2::26", "2001:db8:2::36"]
    zone = next(z for z in plan.zones if z.origin == "example.net.")
    smtp = [(r.type, r.data) for r in zone.records if r.name == "smtp.example.net."]
    assert smtp == [("A", "198.18.1.25"), ("A", "198.18.2.26"), ("A", "198.18.2.36"),
                    ("AAAA", "2001:db8:1::25"), ("AAAA", "2001:db8:2::26"), ("AAAA", "2001:db8:2::36")]
    net_sh = next(f.content for f in host_files(plan, mx_b) if f.path == "/etc/testbed/net.sh")
    assert "ip -4 addr replace 198.18.2.36/24 dev" in net_sh
    assert "ip -6 addr replace 2001:db8:2::36/64 dev \"$ifname\" nodad" in net_sh


def test_extra_address_problems(tmp_path: Path) -> None:
    path = tmp_path / "u.yaml"
    path.write_text(textwrap.dedent(LAB)
                    .replace("addresses: {dc: [36]}", "addresses: {office: [36], dc: [53, 26]}")
                    .replace("smtp.example.net: [mx-a, mx-b]", "smtp.example.net: [mx-a, nobody]"))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    text = "\n".join(map(str, info.value.problems))
    assert "mx-b is not on segment 'office'" in text
    assert "53 is dns's number on segment dc" in text
    assert "26 is its own id on segment dc" in text
    assert "unknown host 'nobody'" in text


# --- recorded from a real round-robin lab (tests/data/clients/repeat) --------------------------

REPEAT = Path(__file__).parent.parent / "data" / "clients" / "repeat"


def recorded_results(name: str, client_addrs: set[str], step: str) -> list[ClientResult]:
    out = []
    for i, trace in enumerate(parse_runs((REPEAT / name).read_text(), client_addrs), 1):
        out.append(ClientResult(
            id=f"{step}.{i}", host=step, software="curl", version="curl 7.88.1", model_of=None, model_source=None,
            resolver="glibc", resolver_model_of=None, action="connect", protocol="smtp", server="smtp.example.net",
            port=25, family="any", timeout_s=3.0, labels={}, trace=trace, outcome=ClientOutcome(True, "", ""),
            step=step, run=i))
    return out


def recorded_connections() -> list[ServerConnection]:
    postfix = mta_adapter("postfix")
    return [c for h in ("mx-a", "mx-b", "mx-c")
            for c in postfix.parse_connections((REPEAT / f"bookworm-postfix-{h}.log").read_text(), h)]


def test_recorded_glibc_office_runs_all_reach_mx_a_by_the_servers_logs() -> None:
    from testbed.model import DistributionCheck

    office = recorded_results("bookworm-curl-office-glibc-x30.json", {"2001:db8:e::10", "198.18.14.10"}, "office")
    branch = recorded_results("bookworm-curl-branch-v4-x30.json", {"2001:db8:10::10", "198.18.16.10"}, "branch")
    assert len(office) == len(branch) == 30
    assert {r.resolved[0] for r in office} == {"2001:db8:e::25"}  # glibc's first address, every time
    assert {r.connected.source for r in office} == {"2001:db8:e::10"}
    for rid, received in attribute(office + branch, recorded_connections()).items():
        (office + branch)[int(rid.split(".")[1]) - 1 + (30 if rid.startswith("branch") else 0)].received_by = received
    obs = Observation(histories={}, mailboxes={}, queues={}, dns_queries=[], logs={},
                      clients={r.id: r for r in office + branch})
    servers = ["mx-a", "mx-b", "mx-c"]
    assert distribution_counts(obs, DistributionCheck(steps="office", servers=servers)) == \
        {"mx-a": 30, "mx-b": 0, "mx-c": 0}
    assert distribution_counts(obs, DistributionCheck(steps="branch", servers=servers)) == \
        {"mx-a": 10, "mx-b": 10, "mx-c": 10}
