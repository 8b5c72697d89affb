"""Baselines: built from matrix rows, compared cell by cell (outcome -> failure; versions -> reported), on the CLI."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from testbed import baseline as bl
from testbed import matrix as mx
from testbed.cli import main
from testbed.errors import TopologyError
from testbed.junit import matrix_xml
from testbed.track import Hop

from test_matrix import result
from test_shards import every_cell, matrix_rows, write_shards

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def rows(tmp_path: Path) -> list[dict]:
    return matrix_rows(tmp_path, every_cell(["bookworm"])[:4])


def test_a_baseline_holds_every_cells_outcome(rows: list[dict]) -> None:
    base = bl.build(rows)
    assert list(base.cells) == [mx.row_cell_id(r) for r in rows]
    cell = base.cells["relay-bounce/broken/bookworm/all exim"]
    assert (cell.delivered, cell.dsn_at_sender, cell.state, cell.bounce_state) == (False, False, "lost", "lost")
    assert cell.message_ended == "relay: bounced" and cell.bounce_ended == "relay: bounced"  # reasons left out
    assert [(h.host, h.family) for h in cell.route] == [("relay", None)]
    assert cell.decisive == "relay 07:18:25 postfix/smtp: X: status=bounced" and cell.versions == {"postfix": "3.7.11"}
    saved = json.loads(bl.dump(base))
    assert saved["schema_version"] == bl.BASELINE_VERSION == "1"
    schema = json.loads((REPO / "docs" / "schemas" / "baseline.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(saved))


def test_the_route_carries_each_hops_family(tmp_path: Path) -> None:
    cell = mx.Cell("relay-bounce", "broken", "bookworm", "all postfix", (("relay", "postfix"),))
    run = result(tmp_path, "lost", "bookworm", {})
    run.histories["m1"].hops[0].address = "2001:db8:16::10"
    run.histories["m1"].hops.append(Hop("mx10", "ABC", "delivered"))
    row = mx.outcome(cell, run)
    assert row["route"] == [{"host": "relay", "family": "ipv6"}, {"host": "mx10", "family": None}]
    assert row["path"] == ["relay", "mx10"] and row["bounce_state"] == "lost"
    # another family: noted, not a failure (Postfix picks one at random for a dual-stack peer)
    other_family = {**row, "route": [{"host": "relay", "family": "ipv4"}, {"host": "mx10", "family": None}]}
    (diff,) = bl.compare(bl.build([row]), bl.build([other_family])).differences
    assert diff.kind == "noted" and not diff.failure
    assert str(diff.changes[0]) == "route: relay -ipv6-> mx10 → relay -ipv4-> mx10"
    # another host: an outcome
    other_host = {**row, "route": [{"host": "relay", "family": "ipv6"}, {"host": "mx20", "family": None}]}
    (diff,) = bl.compare(bl.build([row]), bl.build([other_host])).differences
    assert diff.failure and [str(c) for c in diff.changes] == ["path: relay mx10 → relay mx20",
                                                               "route: relay -ipv6-> mx10 → relay -ipv6-> mx20"]


def test_the_same_run_compares_clean(rows: list[dict]) -> None:
    comparison = bl.compare(bl.build(rows), bl.build(rows))
    assert not comparison.failed and comparison.differences == [] and comparison.compared == 4
    assert comparison.summary() == "baseline: no outcome changed (4 compared)"


def test_an_outcome_change_fails_and_names_the_cell(tmp_path: Path, rows: list[dict]) -> None:
    cell = mx.Cell("relay-bounce", "broken", "bookworm", "all postfix", (("relay", "postfix"),))
    changed = [mx.outcome(cell, result(tmp_path, "lost", "bookworm", {"postfix": "3.7.12"})), *rows[1:]]  # was returned
    comparison = bl.compare(bl.build(rows), bl.build(json.loads(json.dumps(changed))))
    assert comparison.failed
    (diff,) = comparison.differences
    assert diff.cell == "relay-bounce/broken/bookworm/all postfix" and diff.kind == "changed"
    assert {c.name for c in diff.changes} == {"dsn_at_sender", "state", "bounce_ended", "version of postfix"}
    text = comparison.text()
    assert "relay-bounce/broken/bookworm/all postfix: OUTCOME CHANGED" in text
    assert "state: returned → lost" in text and "version of postfix: 3.7.11 → 3.7.12" in text
    assert text.endswith("baseline: 1 cell changed outcome (4 compared)\n")


def test_new_versions_alone_are_reported_not_failed(rows: list[dict]) -> None:
    newer = [{**r, "versions": {"postfix": "3.7.12", "dovecot": "2.3.21"}} for r in rows]
    comparison = bl.compare(bl.build(rows), bl.build(newer))
    assert not comparison.failed and {d.kind for d in comparison.differences} == {"noted"}
    assert "version of dovecot: - → 2.3.21" in comparison.text()
    assert "4 with new versions or route families" in comparison.summary()


def test_the_volatile_parts_are_not_compared(rows: list[dict]) -> None:
    again = [{**r, "decisive": "relay 08:00:00 postfix/smtp: OTHERID: status=bounced", "run_dir": "elsewhere",
              "message_ended": r["message_ended"].replace("550", "551"), "queue_ids": {}} for r in rows]
    assert bl.compare(bl.build(rows), bl.build(again)).differences == []


def test_missing_and_new_cells_are_reported_not_failed(rows: list[dict]) -> None:
    comparison = bl.compare(bl.build(rows[:3]), bl.build(rows[1:]))
    assert not comparison.failed
    kinds = {d.cell: d.kind for d in comparison.differences}
    assert kinds == {mx.row_cell_id(rows[3]): "new", mx.row_cell_id(rows[0]): "not run"}
    assert "1 of the baseline not run, 1 new" in comparison.summary()
    # a shard leaves the cells of the other shards out, rather than calling them not run
    in_shard = bl.compare(bl.build(rows), bl.build(rows[:1]), elsewhere=frozenset(mx.row_cell_id(r) for r in rows[1:]))
    assert in_shard.differences == [] and in_shard.compared == 1


def test_junit_follows_the_baseline(tmp_path: Path, rows: list[dict]) -> None:
    failing_as_before = [{**r, "as_expected": False} for r in rows]
    base = bl.build(failing_as_before)
    suite = ET.fromstring(matrix_xml(failing_as_before, comparison=bl.compare(base, bl.build(failing_as_before))))
    assert suite.get("failures") == "0"  # known failures: not regressions
    assert "not as expected, as in the baseline" in suite.find(".//system-out").text
    changed = [{**failing_as_before[0], "state": "queued"}, *failing_as_before[2:]]
    suite = ET.fromstring(matrix_xml(changed, comparison=bl.compare(base, bl.build(changed))))
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("4", "1", "1")
    assert "state: returned → queued" in suite.find(".//failure").text
    assert suite.find(".//skipped").get("message") == "in the baseline, not run this time"


def test_bad_baseline_files_are_one_error(tmp_path: Path, rows: list[dict]) -> None:
    path = tmp_path / "b.json"
    for content, says in (("{", "not JSON"), (json.dumps({"schema_version": "2", "cells": {}}), "reads baseline version"),
                          (json.dumps({"schema_version": "1", "testbed_version": "x", "cells": {"a": {"scenario": 1}}}),
                           "cells.a.scenario")):
        path.write_text(content)
        with pytest.raises(TopologyError, match=says):
            bl.load(path)
    with pytest.raises(TopologyError, match="no such file"):
        bl.load(tmp_path / "none.json")
    path.write_text(bl.dump(bl.build(rows)))
    assert bl.load(path) == bl.build(rows).model_copy(update={})


def test_save_and_compare_through_the_cli(tmp_path: Path) -> None:
    cells = every_cell(["bookworm"])[:4]
    dirs = [str(d) for d in write_shards(tmp_path, cells, matrix_rows(tmp_path, cells), 2)]
    base = tmp_path / "baseline.json"

    def merge(*extra: str) -> object:
        return CliRunner().invoke(main, ["matrix", "merge", *dirs, "--out", str(tmp_path / "m"), *extra])

    saved = merge("--save-baseline", str(base))
    assert saved.exit_code == 0 and f"baseline of 4 cells written to {base}" in saved.output, saved.output
    same = merge("--baseline", str(base))
    assert same.exit_code == 0 and "baseline: no outcome changed (4 compared)" in same.output, same.output
    data = json.loads(base.read_text())
    cell = "relay-bounce/broken/bookworm/all exim"
    data["cells"][cell]["state"] = "delivered"
    data["cells"]["relay-bounce/broken/bookworm/all sendmail"]["versions"] = {"postfix": "3.7.10"}
    base.write_text(json.dumps(data))
    changed = merge("--baseline", str(base), "--junit", str(tmp_path / "j.xml"))
    assert changed.exit_code == 1, changed.output
    assert f"{cell}: OUTCOME CHANGED" in changed.output and "state: delivered → lost" in changed.output
    assert "relay-bounce/broken/bookworm/all sendmail: changed, not a failure" in changed.output
    assert 'failures="1"' in (tmp_path / "j.xml").read_text()
    missing = merge("--baseline", str(tmp_path / "nope.json"))
    assert missing.exit_code == 2 and "Invalid value for '--baseline'" in missing.output and "no such file" in missing.output
