"""JUnit XML of runs and of the matrix: counts, failure text with decisive lines, lab errors, n/a."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from testbed.junit import matrix_xml, results_xml
from testbed.model import load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.rundir import RunDir
from testbed.runner import RunResult
from testbed.track import History, Hop
from testbed.verdict import Check

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def run_result(tmp_path: Path, error: str | None = None) -> RunResult:
    plan = plan_lab(load_topology(TOPOLOGIES / "relay-bounce.yaml"), "r1", EngineCaps((1, 41)))
    msg = next(i for i, e in enumerate(plan.expectations) if type(e).__name__ == "MessageExpect")
    hist = History("m1", "<m1@x>", ("unknown_user@brainbird.nl",), state="lost",
                   hops=[Hop("relay", "Q1", "bounced", evidence=["relay: 07:18:25 postfix/smtp: Q1: status=bounced"])])
    checks = [Check(i, "message", f"expectation {i}", "pass", "fine") for i in range(len(plan.expectations))]
    checks[msg] = Check(msg, "message", "the bounce reaches the sender", "fail", "state: expected returned, got lost")
    checks[-1] = Check(len(checks) - 1, "log", "only with exim", "n/a", "applies only when relay runs exim")
    return RunResult(plan, RunDir(tmp_path), checks=checks, histories={"m1": hist}, error=error,
                     timings={"bring_up": 2.0, "scenario": 3.5}, versions={"postfix": "3.7.11"})


def test_a_testsuite_per_lab_and_a_testcase_per_expectation(tmp_path: Path) -> None:
    result = run_result(tmp_path)
    root = ET.fromstring(results_xml([result]))
    [suite] = root.findall("testsuite")
    n = len(result.checks)
    assert suite.get("name") == "relay-bounce/broken (bookworm)" and suite.get("time") == "5.500"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped"), suite.get("errors")) == (str(n), "1", "1", "0")
    assert root.get("tests") == str(n)
    failure = suite.find("testcase/failure")
    assert failure.get("message") == "state: expected returned, got lost"
    assert "relay: 07:18:25 postfix/smtp: Q1: status=bounced" in failure.text  # the decisive line
    assert suite.find("testcase/skipped").get("message") == "applies only when relay runs exim"
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == "r1" and props["version:postfix"] == "3.7.11"


def test_a_lab_error_is_an_error_testcase(tmp_path: Path) -> None:
    result = run_result(tmp_path, error="step 2 failed: mx10 refused the message")
    result.checks = []
    suite = ET.fromstring(results_xml([result])).find("testsuite")
    assert suite.get("errors") == "1"
    case = suite.find("testcase")
    assert case.get("name") == "lab" and "mx10 refused" in case.find("error").text


def test_matrix_cells() -> None:
    rows = [
        {"scenario": "relay-bounce", "variant": "broken", "suite": "bookworm", "assignment": "all exim",
         "as_expected": True, "state": "lost", "expectations": "6/6", "decisive": "-", "run_dir": "runs/a"},
        {"scenario": "relay-bounce", "variant": "fixed", "suite": "bookworm", "assignment": "all exim",
         "as_expected": False, "state": "lost", "expectations": "4/6", "error": None,
         "decisive": "relay 07:18 exim: ** x: no route", "run_dir": "runs/b"},
    ]
    suite = ET.fromstring(matrix_xml(rows)).find("testsuite")
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    failed = [c for c in suite.findall("testcase") if c.find("failure") is not None]
    assert [c.get("classname") for c in failed] == ["relay-bounce.fixed"]
    assert "no route" in failed[0].find("failure").text and "runs/b" in failed[0].find("failure").text
