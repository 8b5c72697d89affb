"""Client steps, sweeps and faults in the model, the plan and the verdict (no Docker)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from testbed import faults
from testbed.adapters import ClientOutcome
from testbed.clientrun import ClientResult
from testbed.clienttrace import Attempt, ClientTrace, Lookup
from testbed.errors import TopologyError
from testbed.model import ClientStep, DnsStep, FaultStep, load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.render import host_files
from testbed.verdict import Observation, evaluate

LAB = """
name: clients
segments:
  users: {family: dual}
  servers: {family: dual}
hosts:
  router: {kind: router, segments: [users, servers]}
  dns: {kind: dns, segment: servers}
  mail: {kind: mta, segment: servers, fqdn: mail.example.net, faults: {ipv6: blackhole}}
  alone: {kind: mta, segment: users, fqdn: alone.example.net}
  c: {kind: client, segment: users, software: swaks, suite: trixie}
domains:
  example.net: {mx: {mail: 10}, mailboxes: [user]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def lab(tmp_path: Path, tail: str):
    return load_topology(write(tmp_path, LAB + textwrap.dedent(tail)))


def problems(tmp_path: Path, tail: str) -> list[str]:
    with pytest.raises(TopologyError) as info:
        lab(tmp_path, tail)
    return [str(p) for p in info.value.problems]


SWEEP = """
scenario:
  - sweep:
      over: {delay_ms: [0, 50, 1000]}
      steps:
        - dns: {set: [{preset: aaaa-late, match: {name: mail.example.net.}, delay_ms: "{delay_ms}"}]}
        - client: {id: "c-{delay_ms}", host: c, server: mail}
  - fault: {host: mail, ipv6: refused}
  - client: {id: after, host: c, action: submit, server: mail.example.net, to: user@example.net}
expect:
  - client: {step: "c-*", labels: {delay_ms: [0]}, connected: true}
"""


def test_sweep_expands_once_per_value_with_the_value_substituted(tmp_path: Path) -> None:
    topo = lab(tmp_path, SWEEP)
    steps = topo.steps()
    assert [type(s) for s in steps] == [DnsStep, ClientStep] * 3 + [FaultStep, ClientStep]
    clients = [s.client for s in steps if isinstance(s, ClientStep)]
    assert [c.id for c in clients] == ["c-0", "c-50", "c-1000", "after"]
    assert [c.labels for c in clients] == [{"delay_ms": 0}, {"delay_ms": 50}, {"delay_ms": 1000}, {}]
    # A value that stands alone keeps its type: the DNS rule gets the number, not "50".
    assert [s.dns.set[0]["delay_ms"] for s in steps if isinstance(s, DnsStep)] == [0, 50, 1000]
    assert topo.step_origins()[:2] == [(0, 0), (0, 1)]
    assert topo.step_origins()[-2:] == [(1,), (2,)]
    assert list(topo.client_steps()) == ["c-0", "c-50", "c-1000", "after"]


def test_client_step_defaults() -> None:
    from testbed.model import ClientSpec

    spec = ClientSpec(id="x", host="c", server="mail")
    assert (spec.action, spec.the_protocol, spec.the_port, spec.resolver) == ("connect", "smtp", 25, "glibc")
    fetch = ClientSpec(id="y", host="c", server="imap", action="fetch", mailbox="user@example.net")
    assert (fetch.the_protocol, fetch.the_port) == ("imap", 143)
    assert ClientSpec(id="z", host="c", server="imap", protocol="pop3").the_port == 110


def test_sweep_problems_are_reported_where_they_were_written(tmp_path: Path) -> None:
    found = problems(tmp_path, """
    scenario:
      - sweep:
          over: {delay_ms: [0, 50], other: [1]}
          steps: [{client: {id: "a-{delay_ms}", host: c, server: mail}}]
      - sweep:
          over: {delay_ms: [0, 50]}
          steps: [{client: {id: "b-{delay_ms}", host: c, server: mail, action: teleport}}]
    """)
    assert len(found) == 2, found
    assert "exactly one variable" in found[0] and ":17: scenario[0].sweep.over:" in found[0]
    assert "steps[0] with delay_ms=0" in found[1] and "client.action" in found[1] and "client.client" not in found[1] and ".sweep.steps:" in found[1]


def test_client_step_cross_checks(tmp_path: Path) -> None:
    found = problems(tmp_path, """
    scenario:
      - client: {id: a, host: mail, server: mail}
      - client: {id: b, host: c, server: nowhere}
      - client: {id: c, host: c, server: mail, action: fetch, mailbox: user@example.net}
      - client: {id: d, host: c, server: mail, action: submit}
      - client: {id: d, host: c, server: mail}
    expect:
      - client: {step: "zz-*", ok: true}
      - dns: {step: nope, count: 0}
    """)
    text = "\n".join(found)
    assert "unknown client host 'mail'" in text
    assert "unknown host 'nowhere'" in text
    assert "swaks cannot fetch" in text
    assert "a submission needs recipients" in text
    assert "client step id 'd' is used twice" in text
    assert "unknown client step 'zz-*'" in text
    assert "unknown client step 'nope'" in text
    assert len(found) == 7, found


def test_fault_checks(tmp_path: Path) -> None:
    found = problems(tmp_path, """
    scenario:
      - fault: {host: alone, ipv6: blackhole}
      - fault: {host: router, ipv4: refused}
      - fault: {host: ghost, ipv4: none}
    """)
    text = "\n".join(found)
    assert "segment users, which has no router" not in text  # users has the router
    assert "faults are set on the host whose paths break" in text
    assert "unknown host 'ghost'" in text
    assert len(found) == 2, found


def test_blackhole_needs_a_router(tmp_path: Path) -> None:
    text = LAB.replace("  router: {kind: router, segments: [users, servers]}\n", "").replace(
        "segment: users", "segment: servers")
    path = write(tmp_path, text)
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    assert any("which has no router: use 'refused'" in str(p) for p in info.value.problems)


def _plan(tmp_path: Path, tail: str = SWEEP):
    return plan_lab(lab(tmp_path, tail), "r1", EngineCaps((1, 41)))


def test_blackhole_routes_at_the_router_and_refusal_at_the_host(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    mail_v6 = str(plan.hosts["mail"].addresses("ipv6")[0])
    cmds = faults.fault_commands(plan, "mail", {"ipv6": "blackhole"})
    assert ("router", f"ip -6 route replace blackhole {mail_v6}/128") in cmds
    # The other kind of fault on that family is lifted: the host's reject chain is emptied.
    assert all("REJECT" not in c for _, c in cmds)
    assert {h for h, _ in cmds} == {"router", "mail"}
    refused = faults.fault_commands(plan, "mail", {"ipv6": "refused"})
    assert ("mail", "ip6tables -w -A TESTBED-FAULT -p tcp --syn -j REJECT --reject-with tcp-reset") in refused
    assert any(h == "router" and "route del blackhole" in c for h, c in refused)
    assert not any("iptables -w " in c and "ip6tables" not in c for _, c in refused)  # IPv4 untouched


def test_topology_faults_are_in_the_routers_boot_script(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    net_sh = {f.path: f.content for f in host_files(plan, plan.hosts["router"])}["/etc/testbed/net.sh"]
    mail_v6 = plan.hosts["mail"].addresses("ipv6")[0]
    assert f"ip -6 route replace blackhole {mail_v6}/128" in net_sh
    client_sh = {f.path: f.content for f in host_files(plan, plan.hosts["c"])}["/etc/testbed/net.sh"]
    assert "blackhole" not in client_sh


def test_a_host_image_may_come_from_another_suite(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert plan.suite == "bookworm"
    assert plan.hosts["c"].suite == "trixie" and plan.hosts["mail"].suite == "bookworm"
    assert plan.image_suites == {"bookworm": {"router", "dns", "postfix"}, "trixie": {"client"}}


def _result(sid: str, attempts: list[Attempt], ok: bool, resolved: list[str], labels=None) -> ClientResult:
    t0 = 1000.0
    trace = ClientTrace(
        started=t0, ended=max([a.ended for a in attempts], default=t0 + 0.01), rc=0 if ok else 1,
        stdout="", stderr="",
        lookups=[Lookup("mail.example.net", "glibc", t0, 1.0, resolved, None if resolved else "EAI_NONAME")],
        attempts=attempts,
    )
    return ClientResult(
        id=sid, host="c", software="swaks", version="20240103.0", model_of=None, model_source=None,
        resolver="glibc", resolver_model_of=None, action="connect", protocol="smtp",
        server="mail.example.net", port=25, family="any", timeout_s=3.0, labels=labels or {},
        trace=trace, outcome=ClientOutcome(ok, "220 ready" if ok else "connect timed out"),
    )


def test_client_expectations(tmp_path: Path) -> None:
    plan = _plan(tmp_path, SWEEP + """
  - client: {step: after, ok: true, family: ipv4, address: mail, attempts: 2, after_ms: 2900, resolved: [ipv6, ipv4]}
  - client: {step: after, within_ms: 1000}
  - client: {step: "c-*", labels: {delay_ms: [1000]}, ok: false, resolved: [], resolver_error: EAI_NONAME}
  - client: {step: after, fallback_after_ms: 2900}
  - client: {step: after, fallback_within_ms: 1000}
""")
    v6 = str(plan.hosts["mail"].addresses("ipv6")[0])
    v4 = str(plan.hosts["mail"].addresses("ipv4")[0])
    after = _result("after", [Attempt(v6, "ipv6", 25, 1000.0, 1003.0, "timeout"),
                              Attempt(v4, "ipv4", 25, 1003.0, 1003.01, "connected")], True, [v6, v4])
    obs = Observation(histories={}, mailboxes={}, queues={}, dns_queries=[], logs={}, clients={
        "c-0": _result("c-0", [Attempt(v6, "ipv6", 25, 1000.0, 1000.01, "connected")], True, [v6, v4], {"delay_ms": 0}),
        "c-1000": _result("c-1000", [], False, [], {"delay_ms": 1000}),
        "after": after,
    })
    checks = evaluate(plan, obs)
    assert [c.status for c in checks] == ["pass", "pass", "fail", "pass", "pass", "fail"], [c.detail for c in checks]
    assert "took 3010 ms, expected within 1000 ms" in checks[2].detail
    assert "fell back after 3000 ms, expected within 1000 ms" in checks[5].detail
    # The same expectation fails when what it says is not what happened.
    obs.clients["after"] = _result("after", [Attempt(v6, "ipv6", 25, 1000.0, 1000.01, "connected")], True, [v6, v4])
    first, *_, after, _ = evaluate(plan, obs)[1:]
    assert first.status == "fail"
    assert "family: expected ipv4, got ipv6" in first.detail and "attempts: expected 2, got 1" in first.detail
    assert after.status == "fail" and "no fallback: the first attempt connected" in after.detail


def test_dns_expectation_narrowed_to_a_client_step(tmp_path: Path) -> None:
    plan = _plan(tmp_path, SWEEP.replace('  - client: {step: "c-*"', '  - dns: {step: c-0, type: [A, AAAA], count: 2, within_ms: 5}\n  - client: {step: "c-*"'))
    obs = Observation(histories={}, mailboxes={}, queues={}, logs={}, clients={
        "c-0": _result("c-0", [], True, []),
    }, dns_queries=[
        {"wall": "1970-01-01T00:16:40.002Z", "type": "A", "t_ms": 2.0},
        {"wall": "1970-01-01T00:16:40.004Z", "type": "AAAA", "t_ms": 4.0},
        {"wall": "1970-01-01T00:16:41.000Z", "type": "AAAA", "t_ms": 1000.0},  # after the step
    ])
    check = evaluate(plan, obs)[0]
    assert check.status == "pass", check.detail
    assert "2.0 ms apart" in check.detail


def test_what_the_client_software_cannot_do_is_refused_before_the_lab(tmp_path: Path) -> None:
    text = LAB.replace("software: swaks, suite: trixie", "software: msmtp")
    path = write(tmp_path, text + textwrap.dedent("""
    scenario:
      - client: {id: a, host: c, action: submit, server: mail, to: user@example.net, family: ipv6}
      - client: {id: b, host: c, action: submit, protocol: imap, server: mail, to: user@example.net}
      - client: {id: d, host: c, action: fetch, server: mail, mailbox: user@example.net}
    """))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    text = "\n".join(map(str, info.value.problems))
    assert "msmtp has no option to use ipv6 only" in text
    assert "submit over smtp" in text
    assert "msmtp cannot fetch" in text


# --- the client step against a fake lab replaying recorded real tb-trace runs -------------

RECORDED = Path(__file__).resolve().parents[1] / "data" / "clients" / "trace"

REPLAY = """
name: replay
segments:
  core: {family: dual, subnet_v4: 198.18.4.0/24, subnet_v6: "2001:db8:4::/64"}
hosts:
  dns: {kind: dns, segment: core, id: 53}
  client: {kind: client, segment: core, id: 100, fqdn: client.skimbee.net}
  mx30: {kind: mta, segment: core, id: 30, fqdn: mx30.brainbird.nl}
domains:
  brainbird.nl: {mx: {mx30: 10}, mailboxes: [user]}
scenario:
  - client: {id: s1, host: client, action: submit, server: mx30, to: user@brainbird.nl}
"""


def _replay(tmp_path: Path, recording: str):
    from fakelab import FakeLab

    from testbed.rundir import RunDir
    from testbed.scenario import ScenarioRunner, StepRecord

    plan = plan_lab(load_topology(write(tmp_path, REPLAY)), "rec", EngineCaps((1, 41)))
    lab = FakeLab(plan, tmp_path / "lab")
    lab.answer("client", "tb-trace", (RECORDED / recording).read_text())
    lab.answer("client", "swaks --version", "swaks version 20201014.0\n")
    run_dir = RunDir(tmp_path / "run")
    runner = ScenarioRunner(lab, run_dir)
    record = StepRecord(0, "client", "client s1", 0.0)
    runner.client(plan.scenario[0].client, record)
    return lab, runner, record, run_dir


def test_a_client_step_records_lookups_attempts_and_outcome(tmp_path: Path) -> None:
    lab, runner, record, run_dir = _replay(tmp_path, "bookworm-swaks-blackhole-ipv6.json")
    result = runner.clients["s1"]
    assert result.resolved == ["2001:db8:4::30", "198.18.4.30"]
    assert [(a.address, a.result, a.syns) for a in result.attempts] == [("2001:db8:4::30", "timeout", 3)]
    assert not result.outcome.ok and "IO::Socket::INET6: connect: timeout" in (result.outcome.reply or "")
    assert result.version == "swaks version 20201014.0" and result.connected is None
    assert record.detail["ok"] is False
    [cmd] = [c for c in lab.commands("client") if "tb-trace" in c]
    assert cmd.startswith("tb-trace --ports 25 -- sh -c ") and "--timeout 3s" in cmd
    saved = json.loads((run_dir.path / "clients" / "s1.json").read_text())
    assert saved["attempts"][0]["host"] == "mx30" and saved["resolved"][0] == "2001:db8:4::30"
    assert (run_dir.path / "clients" / "s1.txt").read_text().startswith("$ tb-trace")


def test_a_client_step_that_falls_back(tmp_path: Path) -> None:
    _, runner, _, _ = _replay(tmp_path, "bookworm-msmtp-refused-ipv6.json")
    result = runner.clients["s1"]
    assert [(a.family, a.result) for a in result.attempts] == [("ipv6", "refused"), ("ipv4", "connected")]
    assert result.connected is not None and result.connected.address == "198.18.4.30"


def test_a_client_step_without_a_trace_is_a_lab_error(tmp_path: Path) -> None:
    from fakelab import FakeLab

    from testbed.rundir import RunDir
    from testbed.scenario import ScenarioError, ScenarioRunner, StepRecord

    plan = plan_lab(load_topology(write(tmp_path, REPLAY)), "rec", EngineCaps((1, 41)))
    lab = FakeLab(plan, tmp_path / "lab")
    lab.answer("client", "tb-trace", "", rc=2)
    runner = ScenarioRunner(lab, RunDir(tmp_path / "run"))
    with pytest.raises(ScenarioError, match="client step s1 on client: no trace"):
        runner.client(plan.scenario[0].client, StepRecord(0, "client", "client s1", 0.0))
