"""Exercise files and `testbed check`'s logic, without Docker: the shipped exercises load, bad ones are
reported at their lines, probes are the right commands, and checks run on a fake lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakelab import FakeLab
from recorded import mx_routing_plan

from testbed.checkrun import probe_command, run_checks
from testbed.errors import TopologyError
from testbed.exercise import ConnectProbe, LookupProbe, load_exercise

EXERCISES = Path(__file__).resolve().parents[2] / "exercises"


@pytest.mark.parametrize("name", sorted(p.parent.name for p in EXERCISES.glob("*/exercise.yaml")))
def test_the_shipped_exercises_load(name: str) -> None:
    exercise = load_exercise(EXERCISES / name)
    assert exercise.topology.variant == exercise.spec.variant
    assert {c.name for c in exercise.spec.checks}
    assert all(h in exercise.topology.hosts for h in exercise.spec.may_change)


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "brief.md").write_text("# brief\n")
    path = tmp_path / "exercise.yaml"
    topology = (Path(__file__).resolve().parents[2] / "topologies" / "relay-bounce.yaml").as_posix()
    path.write_text(f"title: t\ntopology: {topology}\n" + body)
    return path


def test_every_problem_of_an_exercise_at_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, """\
may_change: [relay, nosuch]
checks:
  - name: Bad Name
    expect: [{message: m1, state: delivered}]
    pass: p
    fail: f
    hint: h
  - name: unknown-message
    steps:
      - send: {id: probe, from: user@skimbee.net, to: user@brainbird.nl, via: relai}
    expect:
      - {message: other, state: delivered}
    pass: p
    fail: f
    hint: h
  - name: probe-to-nowhere
    probe: {connect: {from: relay, to: mx99, family: ipv6}}
    pass: p
    fail: f
    hint: h
  - name: nothing
    pass: p
    fail: f
""")
    with pytest.raises(TopologyError) as err:
        load_exercise(path)
    text = str(err.value)
    assert text.startswith("2 problems in exercise:")
    assert "exercise.yaml:5: checks[0].name" in text
    assert "exercise.yaml:23: checks[3].hint: required key is missing" in text
    assert "Traceback" not in text


def test_references_in_checks_are_checked_against_the_topology(tmp_path: Path) -> None:
    path = write(tmp_path, """\
may_change: [nosuch]
checks:
  - name: unknown-message
    steps:
      - send: {id: probe, from: user@skimbee.net, to: user@brainbird.nl, via: relai}
    expect:
      - {message: other, state: delivered}
    pass: p
    fail: f
    hint: h
  - name: probe-to-nowhere
    probe: {connect: {from: relay, to: mx99, family: ipv6}}
    pass: p
    fail: f
    hint: h
""")
    with pytest.raises(TopologyError) as err:
        load_exercise(path)
    lines = str(err.value).splitlines()[1:]
    assert len(lines) == 4
    assert any("exercise.yaml:7: checks[0].steps[0].send.via" in line and "did you mean 'relay'" in line
               for line in lines)
    assert any("exercise.yaml:9: checks[0].expect[0].message: no step sends a message 'other'" in line
               for line in lines)
    assert any("exercise.yaml:14: checks[1].probe.connect.to" in line and "mx99" in line for line in lines)
    assert any("exercise.yaml:3: may_change[0]" in line and "nosuch" in line for line in lines)


def test_probe_commands() -> None:
    plan = mx_routing_plan()
    connect = ConnectProbe.model_validate({"from": "relay", "to": "mx10", "family": "ipv4", "port": 25})
    assert probe_command(plan, connect) == f"nc -z -w 3 {plan.hosts['mx10'].addresses('ipv4')[0]} 25"
    to_v6_only = ConnectProbe.model_validate({"from": "relay", "to": "mx20", "family": "ipv4"})
    assert probe_command(plan, to_v6_only) is None  # mx20 has no IPv4 address
    lookup = LookupProbe.model_validate({"from": "relay", "name": "mail.skimbee.net", "type": "AAAA"})
    assert probe_command(plan, lookup) == "dig +short +time=2 +tries=2 AAAA mail.skimbee.net"


def test_checks_on_a_lab_pass_fail_and_say_why(tmp_path: Path) -> None:
    path = write(tmp_path, """\
checks:
  - name: mx20-has-no-ipv4
    probe: {connect: {from: relay, to: mx20, family: ipv4, succeeds: false}}
    pass: good
    fail: bad
    hint: h1
  - name: relay-reaches-mx10
    probe: {connect: {from: relay, to: mx10, family: ipv4}}
    pass: good
    fail: bad
    hint: h2
  - name: lookup-aaaa
    probe: {lookup: {from: relay, name: mail.skimbee.net, type: AAAA, answers: ["2001:db8:2::26"]}}
    pass: good
    fail: bad
    hint: h3
""")
    plan = mx_routing_plan()
    exercise = load_exercise(path, topology=plan.topology)
    lab = FakeLab(plan, tmp_path / "lab")
    lab.answer("relay", "nc -z", "", rc=1)  # the connection is refused
    lab.answer("relay", "dig +short", "2001:db8:2::26\n")
    outcomes = {o.name: o for o in run_checks(lab, exercise, tmp_path / "run")}
    assert outcomes["mx20-has-no-ipv4"].passed and outcomes["mx20-has-no-ipv4"].hint is None
    assert not outcomes["relay-reaches-mx10"].passed
    assert outcomes["relay-reaches-mx10"].hint == "h2" and outcomes["relay-reaches-mx10"].message == "bad"
    assert "no connection" in outcomes["relay-reaches-mx10"].evidence[0]
    assert outcomes["lookup-aaaa"].passed and "2001:db8:2::26" in outcomes["lookup-aaaa"].evidence[0]
