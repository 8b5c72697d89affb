"""result.json and matrix.json: written through typed models, versioned, described by the published JSON Schemas."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner
from fakelab import FakeLab
from pydantic import ValidationError
from test_client_steps import RECORDED, REPLAY, write
from test_matrix import result as matrix_result
from test_runner import SWAKS

from testbed import matrix as mx
from testbed import resultschema as rs
from testbed.bundle import BundleError, load_result
from testbed.cli import main
from testbed.model import load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.runner import RunOptions, run_one
from testbed.track import Hop

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = REPO / "docs" / "schemas"
#: A run directory a real lab wrote before result.json had a schema_version.
OLD_RUN_DIR = REPO / "tests" / "data" / "rundir"


def validator(name: str) -> jsonschema.Draft202012Validator:
    """A validator of the schema as published in docs/schemas, not as the models make it now."""
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def schema_errors(name: str, data: dict) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(data)]


def exim_run(lab: FakeLab, tmp_path: Path) -> tuple[dict, dict]:
    """(result.json as run_one wrote it, RunResult.to_dict()) of the recorded Exim lab."""
    lab.answer("client", "swaks ", SWAKS)
    lab.answer("client", "python3 -c", "")
    result = run_one(lab, RunOptions(runs_root=tmp_path / "runs"))
    assert result.passed
    return json.loads((result.run_dir.path / "result.json").read_text()), result.to_dict()


def client_run(tmp_path: Path, recording: str) -> dict:
    """result.json of a lab with one client step, replayed from a recorded trace."""
    topology = REPLAY + "expect:\n  - client: {step: s1, ok: true}\n"
    plan = plan_lab(load_topology(write(tmp_path, topology)), "rec", EngineCaps((1, 41)))
    lab = FakeLab(plan, tmp_path / "lab")
    lab.answer("client", "tb-trace", (RECORDED / recording).read_text())
    lab.answer("client", "swaks --version", "swaks version 20201014.0\n")
    result = run_one(lab, RunOptions(runs_root=tmp_path / "runs"))
    assert result.error is None
    return json.loads((result.run_dir.path / "result.json").read_text())


# --- writing ------------------------------------------------------------------------------


def test_the_runner_writes_a_versioned_result_json_the_models_and_the_published_schema_accept(
        exim_lab: FakeLab, tmp_path: Path) -> None:
    saved, as_dict = exim_run(exim_lab, tmp_path)
    assert saved["schema_version"] == rs.SCHEMA_VERSION == "1"
    # The models describe every key the run wrote (histories with hops and a bounce, steps, timings).
    assert saved["messages"]["m1"]["dsns"] and saved["messages"]["m1"]["hops"][0]["evidence"]
    assert {s["kind"] for s in saved["steps"]} >= {"send", "stop", "settle", "flush"}
    rs.RunResultDoc.model_validate(saved)
    assert schema_errors("result", saved) == []
    # ... and nothing else changed: the same keys in the same order, the same values, as to_dict() wrote them.
    expected = {"schema_version": "1", **json.loads(json.dumps(as_dict))}
    assert saved == expected and list(saved) == list(expected)
    hop_keys = [list(h) for m in saved["messages"].values() for h in m["hops"]]
    # A hop without a next host has no next_host key, as before.
    assert ["host", "queue_id", "outcome", "address", "family", "reason", "in_queue", "evidence"] in hop_keys


@pytest.mark.parametrize("recording", ["bookworm-swaks-blackhole-ipv6.json", "bookworm-msmtp-refused-ipv6.json"])
def test_a_client_step_s_result_json_matches_the_models(tmp_path: Path, recording: str) -> None:
    saved = client_run(tmp_path, recording)
    [client] = saved["clients"].values()
    assert client["lookups"] and client["attempts"]
    rs.RunResultDoc.model_validate(saved)
    assert schema_errors("result", saved) == []


def test_a_run_recorded_from_a_real_lab_matches_version_1(tmp_path: Path) -> None:
    saved = json.loads((OLD_RUN_DIR / "result.json").read_text())
    assert "schema_version" not in saved  # written before versions: version 1's shape
    rs.RunResultDoc.model_validate(saved)
    assert schema_errors("result", saved) == []


def test_a_wrong_shape_is_refused_by_the_model_and_the_schema(exim_lab: FakeLab, tmp_path: Path) -> None:
    good, _ = exim_run(exim_lab, tmp_path)
    cases = {
        "a hop's outcome nobody writes": lambda d: d["messages"]["m1"]["hops"][0].update(outcome="teleported"),
        "a misspelt key in a hop": lambda d: d["messages"]["m1"]["hops"][0].update(queueid="x"),
        "a required key left out": lambda d: d.pop("passed"),
        "a number as text": lambda d: d["expectations"][0].update(index="0"),
        "a bounce of another shape": lambda d: d["messages"]["m1"]["dsns"][0].update(recipients="x@y"),
        "a step kind that does not exist": lambda d: d["steps"][0].update(kind="reboot"),
        "a newer version": lambda d: d.update(schema_version="2"),
    }
    for what, change in cases.items():
        bad = copy.deepcopy(good)
        change(bad)
        with pytest.raises(ValidationError):
            rs.RunResultDoc.model_validate(bad)
        assert schema_errors("result", bad), what


def test_a_writer_bug_fails_the_run_loudly_and_keeps_result_json(
        exim_lab: FakeLab, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Hop.to_dict
    monkeypatch.setattr(Hop, "to_dict", lambda self: {**real(self), "queueid": self.queue_id})
    exim_lab.answer("client", "swaks ", SWAKS)
    exim_lab.answer("client", "python3 -c", "")
    with pytest.raises(ValidationError, match="queueid"):
        run_one(exim_lab, RunOptions(runs_root=tmp_path / "runs"))
    [saved] = (tmp_path / "runs").glob("*/result.json")
    assert "schema_version" not in json.loads(saved.read_text())  # the evidence, not claiming a shape
    assert exim_lab.events[-1] == "teardown"


def test_unknown_top_level_keys_are_kept_and_captures_are_described(exim_lab: FakeLab, tmp_path: Path) -> None:
    saved, _ = exim_run(exim_lab, tmp_path)
    saved.pop("schema_version")
    capture = {"segment": "core", "family": "dual", "file": "captures/core.pcap", "bytes": 2048, "captured": 12,
               "dropped": 0}
    doc = rs.result_document({**saved, "captures": [capture], "added_later": {"any": "thing"}})
    assert doc["captures"] == [capture] and doc["added_later"] == {"any": "thing"}
    assert schema_errors("result", doc) == []
    assert saved["captures"] == []  # the fake lab recorded no capture: an empty list, not a missing key
    with pytest.raises(ValidationError, match="captured"):
        rs.result_document({**saved, "captures": [{**capture, "captured": "12"}]})


# --- matrix.json --------------------------------------------------------------------------


def test_matrix_rows_from_the_matrix_validate(tmp_path: Path) -> None:
    cell = mx.Cell("relay-bounce", "broken", "bookworm", "all postfix", (("relay", "postfix"),))
    rows = [mx.outcome(cell, matrix_result(tmp_path, "lost", "bookworm", {"postfix": "3.7.11"})),
            mx.outcome(cell, matrix_result(tmp_path, "returned", "bookworm", {"postfix": "3.7.11"}), message="m9")]
    assert "path" in rows[0] and "path" not in rows[1]  # m9 was never sent: the row says so
    doc = rs.matrix_document(rows, 12.5)
    assert doc == {"schema_version": "1", "elapsed_s": 12.5, "rows": json.loads(json.dumps(rows))}
    assert list(doc["rows"][1]) == list(rows[1])
    assert schema_errors("matrix", doc) == []
    bad = copy.deepcopy(rows)
    bad[0]["as_expected"] = "yes"
    with pytest.raises(ValidationError, match="as_expected"):
        rs.matrix_document(bad, 12.5)
    assert schema_errors("matrix", {**doc, "rows": bad})


# --- reading ------------------------------------------------------------------------------


def test_the_version_a_reader_accepts() -> None:
    assert rs.version_problem({"rows": []}, "x") is None  # before versions
    assert rs.version_problem({"schema_version": "1"}, "x") is None
    assert rs.version_problem({"schema_version": "1.4"}, "x") is None  # a later minor would still read
    assert "written by a newer testbed (schema version 2)" in rs.version_problem({"schema_version": "2"}, "x")
    assert "does not understand" in rs.version_problem({"schema_version": "one"}, "x")
    assert "does not understand" in rs.version_problem({"schema_version": True}, "x")


def old_run(tmp_path: Path) -> Path:
    target = tmp_path / OLD_RUN_DIR.name
    shutil.copytree(OLD_RUN_DIR, target)
    return target


def test_a_run_directory_without_a_schema_version_is_read(tmp_path: Path) -> None:
    run = old_run(tmp_path)
    assert load_result(run)["topology"]
    assert CliRunner().invoke(main, ["report", str(run)]).exit_code == 0
    result = CliRunner().invoke(main, ["bundle", str(run), "-o", str(tmp_path / "b.tar.gz")])
    assert result.exit_code == 0, result.output


def test_a_newer_major_version_is_one_clear_error(tmp_path: Path) -> None:
    run = old_run(tmp_path)
    data = json.loads((run / "result.json").read_text())
    (run / "result.json").write_text(json.dumps({**data, "schema_version": "2"}))
    with pytest.raises(BundleError, match="written by a newer testbed"):
        load_result(run)
    for command in (["report", str(run)], ["bundle", str(run)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2, result.output
        assert "written by a newer testbed (schema version 2)" in result.output
        assert "Traceback" not in result.output and "or a matrix directory" not in result.output
    assert not (run / "report.html").exists()  # refused before anything was written

    matrix = tmp_path / "matrix"
    matrix.mkdir()
    (matrix / "matrix.json").write_text(json.dumps({"schema_version": "2", "elapsed_s": 1.0, "rows": []}))
    result = CliRunner().invoke(main, ["report", str(matrix)])
    assert result.exit_code != 0 and "matrix.json was written by a newer testbed" in result.output
    assert "Traceback" not in result.output


# --- publishing (docs/schemas/ is kept current in test_schema.py) ---------------------------


@pytest.mark.parametrize("what", ["result", "matrix", "baseline"])
def test_the_cli_prints_a_versioned_schema(what: str) -> None:
    schema = json.loads(CliRunner().invoke(main, ["schema", what]).output)
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"].endswith("2020-12/schema") and schema["$id"] == f"urn:testbed:schema:{what}:1"
    assert schema["title"] == f"testbed {what}.json, schema version 1"
    assert schema["properties"]["schema_version"]["const"] == "1"
    # Every key of every record says what it is: the schema is the documentation of the file.
    records = [schema, *schema["$defs"].values()]
    undescribed = [(r["title"], k) for r in records for k, p in r.get("properties", {}).items()
                   if not p.get("description")]
    assert undescribed == []
