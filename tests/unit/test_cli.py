"""The command line without Docker: clear errors and exit codes, never a traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from testbed.cli import main

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_validate_ok() -> None:
    res = invoke("validate", *map(str, sorted(TOPOLOGIES.glob("*.yaml"))))
    assert res.exit_code == 0, res.output
    assert "mx-routing.yaml: ok (variants: broken, fixed)" in res.output


def test_validate_reports_problems_with_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsegments: {a: {family: ipv5}}\nhosts: {h: {kind: mta, segment: b}}\n")
    res = invoke("validate", str(bad))
    assert res.exit_code == 2
    assert "segments.a.family" in res.output and "Traceback" not in res.output


def test_run_with_a_bad_topology_fails_before_docker(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n")
    res = invoke("run", str(bad))
    assert res.exit_code == 2 and "required key is missing" in res.output


def test_unknown_topology_name() -> None:
    res = invoke("run", "no-such-lab")
    assert res.exit_code == 2 and "known: " in res.output and "mx-routing" in res.output


def test_bad_arguments_are_usage_errors() -> None:
    assert invoke("run", "mx-routing", "--mta", "qmail").exit_code == 2
    res = invoke("plan", "mx-routing", "--set", "no-equals-sign")
    assert res.exit_code == 2 and "expected PATH=VALUE" in res.output
    res = invoke("plan", "mx-routing", "--variant", "nope")
    assert res.exit_code == 2 and "no variant 'nope'" in res.output


def test_set_override_is_validated() -> None:
    res = invoke("plan", "mx-routing", "--set", "hosts.relay.stack=dual")
    assert res.exit_code == 2 and "a dual host cannot sit on the ipv4 segment" in res.output


def test_plan_and_render_work_offline(tmp_path: Path) -> None:
    res = invoke("plan", "mx-routing", "--variant", "fixed")
    assert res.exit_code == 0 and "mx20" in res.output
    res = invoke("render", "relay-bounce", "--out", str(tmp_path), "--mta", "postfix")
    assert res.exit_code == 0
    assert (tmp_path / "relay" / "etc" / "postfix" / "main.cf").exists()
    assert (tmp_path / "dns" / "etc" / "testbed" / "dns.json").exists()
