"""Matrix shards: K/N is a deterministic partition of the cells, bad K/N is one click error, merge joins and refuses."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed import matrix as mx
from testbed.cli import main
from testbed.matrixrun import merge_matrices
from testbed.resultschema import matrix_document
from testbed.shards import Part, Shard, ShardError, merge, parse_shard

from test_matrix import TOPOLOGIES, result

SPEC = TOPOLOGIES / "matrices" / "default.yaml"


def every_cell(suites=("bookworm", "trixie")) -> list[mx.Cell]:
    return mx.cells(mx.load_spec(SPEC, TOPOLOGIES), TOPOLOGIES, list(suites))


@pytest.mark.parametrize("total", [1, 2, 3, 4, 7, 40, 41])
def test_the_shards_partition_the_cells(total: int) -> None:
    cells = every_cell()  # 40 cells: more shards than cells leaves some empty, never a cell out
    shares = [Shard(k, total).select(cells) for k in range(1, total + 1)]
    ids = [c.id for share in shares for c in share]
    assert sorted(ids) == sorted(c.id for c in cells) and len(set(ids)) == len(cells) == 40
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1  # every N-th: balanced to one cell
    for share in shares:  # each share keeps the matrix's own order
        assert share == [c for c in cells if c in share]


def test_a_shard_does_not_depend_on_the_order_of_the_spec() -> None:
    cells = every_cell()
    shuffled = cells[:]
    random.Random(12).shuffle(shuffled)
    for k in (1, 2, 3):
        assert {c.id for c in Shard(k, 3).select(cells)} == {c.id for c in Shard(k, 3).select(shuffled)}


def test_cell_ids_are_unique_and_name_the_cell() -> None:
    cells = every_cell()
    assert len({c.id for c in cells}) == len(cells)
    assert "relay-bounce/broken/bookworm/exim relay, sendmail MXs" in {c.id for c in cells}


@pytest.mark.parametrize("text, expected", [("1/1", Shard(1, 1)), ("2/3", Shard(2, 3)), (" 3 / 3 ", Shard(3, 3))])
def test_good_shards_parse(text: str, expected: Shard) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize("text, says", [("0/2", "K must be between 1 and N"), ("3/2", "K must be between 1 and N"),
                                        ("x", "is not K/N"), ("1/0", "N must be at least 1"), ("1/", "is not K/N"),
                                        ("-1/2", "is not K/N"), ("1/2/3", "is not K/N"), ("", "is not K/N")])
def test_bad_shards_are_one_click_error(text: str, says: str) -> None:
    with pytest.raises(ShardError, match=says):
        parse_shard(text)
    result = CliRunner().invoke(main, ["matrix", "--shard", text, "--spec", str(SPEC)])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--shard'" in result.output and says in result.output
    assert "Traceback" not in result.output


# --- merge --------------------------------------------------------------------------------


def matrix_rows(tmp_path: Path, cells: list[mx.Cell]) -> list[dict]:
    """Outcome rows as a run writes them (a real RunResult per cell, alternating lost and returned)."""
    rows = []
    for i, cell in enumerate(cells):
        state = "lost" if i % 2 else "returned"
        rows.append(mx.outcome(cell, result(tmp_path, state, cell.suite, {"postfix": "3.7.11"})))
    return json.loads(json.dumps(rows))  # as matrix.json holds them


def write_shards(tmp_path: Path, cells: list[mx.Cell], rows: list[dict], total: int) -> list[Path]:
    by_id = {mx.row_cell_id(r): r for r in rows}
    dirs = []
    for k in range(1, total + 1):
        shard = Shard(k, total)
        share = shard.select(cells)
        directory = tmp_path / f"shard-{k}"
        directory.mkdir(parents=True)
        doc = matrix_document([by_id[c.id] for c in share], 10.0 + k, shard=shard.info(cells))
        (directory / "matrix.json").write_text(json.dumps(doc))
        dirs.append(directory)
    return dirs


@pytest.mark.parametrize("total", [2, 3, 5])
def test_merged_shards_equal_the_unsharded_run(tmp_path: Path, total: int) -> None:
    cells = every_cell(["bookworm"])
    rows = matrix_rows(tmp_path, cells)
    dirs = write_shards(tmp_path, cells, rows, total)
    random.Random(total).shuffle(dirs)  # the order the artifacts arrive in does not matter
    merged = merge_matrices(dirs, tmp_path / "merged")
    written = json.loads((tmp_path / "merged" / "matrix.json").read_text())
    assert written["rows"] == matrix_document(rows, 0.0)["rows"] == merged.rows
    assert written["elapsed_s"] == 10.0 + total  # the longest shard's
    assert sorted(m["shard"] for m in written["merged_from"]) == [f"{k}/{total}" for k in range(1, total + 1)]
    assert "shard" not in written
    assert (tmp_path / "merged" / "matrix.md").read_text().count("| relay-bounce |") == 10
    assert (tmp_path / "merged" / "matrix.html").is_file()


def test_merge_through_the_cli_with_junit(tmp_path: Path) -> None:
    cells = every_cell(["bookworm"])[:4]
    dirs = write_shards(tmp_path, cells, matrix_rows(tmp_path, cells), 2)
    junit = tmp_path / "junit.xml"
    res = CliRunner().invoke(main, ["matrix", "merge", *map(str, dirs), "--out", str(tmp_path / "m"),
                                    "--junit", str(junit)])
    assert res.exit_code == 0, res.output
    assert "4 labs in 12 s" in res.output and junit.read_text().count("<testcase ") == 4


def test_merged_rows_point_at_the_cells_directories_where_the_shards_are_now(tmp_path: Path) -> None:
    cells = every_cell(["bookworm"])[:2]
    rows = [{**r, "run_dir": f"runs/matrix-x/runs/cell-{i}"} for i, r in enumerate(matrix_rows(tmp_path, cells))]
    dirs = write_shards(tmp_path / "artifacts", cells, rows, 2)
    now = []
    for d in dirs:  # each shard's cell directory came along with its matrix.json (a CI artifact)
        name = json.loads((d / "matrix.json").read_text())["rows"][0]["run_dir"].rsplit("/", 1)[1]
        (d / "runs" / name).mkdir(parents=True)
        now.append(str(d / "runs" / name))
    merged = merge_matrices(dirs, tmp_path / "merged")
    assert sorted(r["run_dir"] for r in merged.rows) == sorted(now)


def parts(tmp_path: Path, total: int = 2) -> list[Part]:
    cells = every_cell(["bookworm"])[:6]
    dirs = write_shards(tmp_path, cells, matrix_rows(tmp_path, cells), total)
    return [Part(str(d), json.loads((d / "matrix.json").read_text())) for d in dirs]


def test_merge_refuses_the_same_cell_twice(tmp_path: Path) -> None:
    one, two = parts(tmp_path)
    with pytest.raises(ShardError, match=r"shard 1/2 twice: .*shard-1 and .*shard-1"):
        merge([one, two, one])
    overlapping = Part("other", {**two.document, "rows": two.document["rows"] + one.document["rows"][:1]})
    with pytest.raises(ShardError, match=r"cell relay-bounce/\S+/bookworm/.* is in both .*shard-1 and other"):
        merge([one, overlapping])
    whole = [Part(p.source, {k: v for k, v in p.document.items() if k != "shard"}) for p in (one, one)]
    with pytest.raises(ShardError, match="overlapping"):  # whole matrices too
        merge(whole)


def test_merge_refuses_shards_of_different_splits_and_matrices(tmp_path: Path) -> None:
    one, two = parts(tmp_path / "a")
    _, three_b, _ = parts(tmp_path / "b", total=3)
    with pytest.raises(ShardError, match="different splits .*is 1/2.*is 2/3"):
        merge([one, three_b])
    foreign = Part("foreign", {**two.document, "shard": {**two.shard, "matrix_cells": two.shard["matrix_cells"][:-1]}})
    with pytest.raises(ShardError, match="shards of different matrices"):
        merge([one, foreign])
    same_index = Part("again", {**one.document, "rows": two.document["rows"]})
    with pytest.raises(ShardError, match="shard 1/2 twice"):
        merge([one, same_index])


def test_merge_refuses_a_missing_shard_and_a_mix(tmp_path: Path) -> None:
    one, _, three = parts(tmp_path / "a", total=3)
    with pytest.raises(ShardError, match="shard 2/3 missing"):
        merge([one, three])
    whole = Part("whole", {k: v for k, v in one.document.items() if k != "shard"})
    with pytest.raises(ShardError, match="some parts are shards and some are not"):
        merge([whole, three])
    with pytest.raises(ShardError, match="nothing to merge"):
        merge([])


def test_whole_matrices_of_different_cells_merge(tmp_path: Path) -> None:
    one, two = parts(tmp_path)
    strip = [Part(p.source, {k: v for k, v in p.document.items() if k != "shard"}) for p in (one, two)]
    merged = merge(strip)
    assert [mx.row_cell_id(r) for r in merged.rows] == [mx.row_cell_id(r) for r in one.document["rows"] + two.document["rows"]]


def test_merge_errors_through_the_cli_are_one_message(tmp_path: Path) -> None:
    cells = every_cell(["bookworm"])[:4]
    dirs = write_shards(tmp_path, cells, matrix_rows(tmp_path, cells), 2)
    for args, says in (([dirs[0], dirs[0]], "shard 1/2 twice"), ([dirs[0]], "shard 2/2 missing"),
                       ([tmp_path / "nowhere"], "no matrix.json here")):
        res = CliRunner().invoke(main, ["matrix", "merge", *map(str, args), "--out", str(tmp_path / "m")])
        assert res.exit_code == 2 and says in res.output, res.output
        assert "Traceback" not in res.output
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "matrix.json").write_text(json.dumps({"elapsed_s": 1.0, "rows": [{"scenario": "x"}]}))
    res = CliRunner().invoke(main, ["matrix", "merge", str(tmp_path / "bad"), "--out", str(tmp_path / "m")])
    assert res.exit_code == 2 and "rows.0.variant" in res.output, res.output


def test_options_before_merge_are_refused(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["matrix", "--mta", "exim", "merge", str(tmp_path)])
    assert res.exit_code == 2 and "options before `merge` are the matrix run's (--mta)" in res.output


def test_an_empty_shard_writes_an_empty_matrix_without_an_engine(tmp_path: Path) -> None:
    spec = tmp_path / "one.yaml"
    spec.write_text("scenarios: [relay-bounce]\nmtas: [exim]\n")  # 2 cells, so shard 3/3 is empty
    res = CliRunner().invoke(main, ["matrix", "--spec", str(spec), "--shard", "3/3", "--out", str(tmp_path / "s3")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "s3" / "matrix.json").read_text())
    assert doc["rows"] == [] and doc["shard"]["index"] == 3 and len(doc["shard"]["matrix_cells"]) == 2
