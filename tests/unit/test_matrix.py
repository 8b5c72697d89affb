"""The MTA matrix: spec validation, cell enumeration, outcome rows, suite comparison."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import matrix as mx
from testbed.errors import TopologyError
from testbed.rundir import RunDir
from testbed.runner import RunResult
from testbed.track import History, Hop
from testbed.verdict import Check

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def test_shipped_spec_and_its_cells() -> None:
    spec = mx.load_spec(TOPOLOGIES / "matrices" / "default.yaml", TOPOLOGIES)
    cells = mx.cells(spec, TOPOLOGIES, ["bookworm"])
    # 2 scenarios x 2 variants x (3 MTAs + 2 mixed)
    assert len(cells) == 20
    all_exim = [c for c in cells if c.label == "all exim" and c.scenario == "mx-routing"]
    assert {sw for c in all_exim for _, sw in c.software} == {"exim"}
    assert dict(all_exim[0].software).keys() == {"mail", "mx10", "mx20", "mx30", "relay"}
    topo = mx.topology_for(all_exim[0], TOPOLOGIES)
    assert topo.software_of("mx20") == "exim" and topo.suite == "bookworm"
    assert len(mx.cells(spec, TOPOLOGIES, ["bookworm", "trixie"], ["postfix"])) == 2 * 2 * 2 * 3


def test_bad_spec_reports_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("scenarios: [relay-bounce, nope]\nmtas: [postfix, qmail]\n"
                   "mixed:\n  relay-bounce:\n    x: {relay: exim, dns: postfix, mx10: qmail}\n")
    with pytest.raises(TopologyError) as err:
        mx.load_spec(bad, TOPOLOGIES)
    paths = {p.path for p in err.value.problems}
    assert paths == {"scenarios[1]", "mtas[1]", "mixed.relay-bounce.x.dns", "mixed.relay-bounce.x.mx10"}


def result(tmp_path: Path, state: str, suite: str, versions: dict[str, str]) -> RunResult:
    from testbed.model import load_topology
    from testbed.plan import EngineCaps, plan_lab

    plan = plan_lab(load_topology(TOPOLOGIES / "relay-bounce.yaml"), "r", EngineCaps((1, 41)), suite=suite)
    hist = History("m1", "<m1@x>", ("unknown_user@brainbird.nl",), state=state,
                   hops=[Hop("relay", "1234567890AB", "bounced", reason="550 5.1.1 unknown")])
    dsn_hop = Hop("relay", "ABCDEF123456", "bounced" if state == "lost" else "delivered",
                  reason="no MX host", evidence=["relay: Nov 29 07:18:25 relay postfix/smtp[175]: X: status=bounced"])
    hist.dsns = [History("m1 bounce", "<d@x>", ("user@skimbee.net",), hops=[dsn_hop],
                         delivered_to=[("user@skimbee.net", "mail")] if state == "returned" else [])]
    return RunResult(plan, RunDir(tmp_path), checks=[Check(0, "message", "d", "pass", "")],
                     histories={"m1": hist}, versions=versions)


def test_outcome_rows_and_suite_changes(tmp_path: Path) -> None:
    cell_b = mx.Cell("relay-bounce", "broken", "bookworm", "all postfix", (("relay", "postfix"),))
    cell_t = mx.Cell("relay-bounce", "broken", "trixie", "all postfix", (("relay", "postfix"),))
    row_b = mx.outcome(cell_b, result(tmp_path, "lost", "bookworm", {"postfix": "3.7.11"}))
    row_t = mx.outcome(cell_t, result(tmp_path, "returned", "trixie", {"postfix": "3.10.13"}))
    assert row_b["delivered"] is False and row_b["dsn_at_sender"] is False and row_b["state"] == "lost"
    assert row_b["bounce_ended"].startswith("relay: bounced")
    assert row_b["decisive"] == "relay 07:18:25 postfix/smtp: X: status=bounced"
    assert row_t["dsn_at_sender"] is True
    table = mx.markdown([row_b, row_t])
    assert table.count("\n") == 4 and "| relay-bounce | broken | bookworm | all postfix | no | no | lost |" in table
    changes = mx.suite_changes([row_b, row_t])
    assert "bookworm: postfix 3.7.11" in changes and "trixie: postfix 3.10.13" in changes
    assert "dsn_at_sender: False → True" in changes and "state: lost → returned" in changes
    assert "postfix: bookworm: 12, trixie: 12" in changes
    assert mx.suite_changes([row_b]) == ""
