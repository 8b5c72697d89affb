"""Running the MTA matrix: every cell a lab, side by side, then the outcomes table on disk.

``matrix.py`` is the pure part (cells, outcome rows, tables), ``shards.py``
the split and the join; this module drives the labs through the runner and
writes ``matrix.md``, ``matrix.json`` and ``matrix.html``, for a run (or one
shard of it) and for a merge of shards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import fabric
from . import matrix as mx
from .errors import Problem, TopologyError
from .results import RunResult
from .resultschema import SCHEMA_VERSION, MatrixDoc, matrix_document, version_problem
from .runner import Progress, RunOptions, ensure_images_for_topologies, plan_runs, run_plans
from .shards import Merged, Part, Shard, merge

#: (cells done, cells in all, the cell, its outcome row) as each lab finishes.
RowProgress = Callable[[int, int, mx.Cell, dict[str, Any]], None]


@dataclass(frozen=True)
class MatrixRun:
    rows: list[dict[str, Any]]
    elapsed_s: float
    table: str
    changes: str
    target: Path
    shard: dict[str, Any] | None = None  # matrix.json's `shard`: set when this run was one shard

    @property
    def as_expected(self) -> bool:
        return all(r["as_expected"] for r in self.rows)

    @property
    def in_other_shards(self) -> frozenset[str]:
        """The ids of the matrix's cells other shards run (none: not a shard)."""
        if not self.shard:
            return frozenset()
        return frozenset(self.shard["matrix_cells"]) - {mx.row_cell_id(r) for r in self.rows}


def run_matrix(
    spec: Path,
    topologies: Path,
    suites: Sequence[str],
    mtas: Sequence[str] | None,
    jobs: int,
    target: Path,
    on_row: RowProgress = lambda *_: None,
    image_progress: Progress = lambda _label, _message: None,
    capture: bool = True,
    shard: Shard | None = None,
) -> MatrixRun:
    spec_model = mx.load_spec(spec, topologies)
    every_cell = mx.cells(spec_model, topologies, list(suites), list(mtas) if mtas else None)
    todo = shard.select(every_cell) if shard else every_cell
    shard_info = shard.info(every_cell) if shard else None
    target.mkdir(parents=True, exist_ok=True)
    if not todo:  # a shard of a matrix with fewer cells than shards: nothing to run, and no engine needed
        return write_outputs(target, [], 0.0, shard=shard_info, progress=image_progress)
    client = fabric.connect()
    options = RunOptions(runs_root=target / "runs", progress=lambda label, msg: None, capture=capture)
    topos = [mx.topology_for(c, topologies) for c in todo]
    image_ids = ensure_images_for_topologies([(t, t.suite) for t in topos], progress=image_progress)
    plans = plan_runs(client, topos)  # all at once: every lab gets its own subnets
    cell_of = {plan.run_id: cell for plan, cell in zip(plans, todo)}
    done: list[int] = []

    def report(result: RunResult) -> None:
        done.append(1)
        cell = cell_of[result.plan.run_id]
        on_row(len(done), len(todo), cell, mx.outcome(cell, result))

    started = time.monotonic()
    results = run_plans(client, plans, options, image_ids, jobs=jobs, on_result=report)
    rows = [mx.outcome(cell, result) for cell, result in zip(todo, results)]
    return write_outputs(target, rows, time.monotonic() - started, shard=shard_info, progress=image_progress)


def write_outputs(target: Path, rows: list[dict[str, Any]], elapsed: float, shard: dict[str, Any] | None = None,
                  merged_from: list[dict[str, Any]] | None = None,
                  progress: Progress = lambda _label, _message: None) -> MatrixRun:
    """matrix.md, matrix.json and matrix.html of a run, a shard or a merge, in ``target``."""
    target.mkdir(parents=True, exist_ok=True)
    table = mx.markdown(rows)
    changes = mx.suite_changes(rows)
    what = f"{len(rows)} labs in {elapsed:.0f} s"
    if shard:
        what += f" (shard {shard['index']}/{shard['total']} of {len(shard['matrix_cells'])} cells)"
    if merged_from:
        what += f" (merged from {len(merged_from)} parts: {', '.join(m['source'] for m in merged_from)})"
    (target / "matrix.md").write_text(f"# MTA matrix\n\n{what}\n\n{table}\n{changes}")
    # a row of another shape raises here, in the tests
    document = matrix_document(rows, round(elapsed, 1), shard=shard, merged_from=merged_from)
    (target / "matrix.json").write_text(json.dumps(document, indent=2) + "\n")
    try:  # each cell wrote its own report.html at its end; the matrix's page links them
        from .htmlreport import write_matrix_report

        write_matrix_report(target, cell_reports=False)
    except Exception as exc:  # noqa: BLE001 - matrix.md and matrix.json are written; the page is an addition
        progress("matrix", f"could not write matrix.html: {type(exc).__name__}: {exc}")
    return MatrixRun(rows, elapsed, table, changes, target, shard)


def read_part(directory: Path) -> Part:
    """A shard's (or a whole run's) matrix.json, checked: a directory, or the file itself."""
    path = directory / "matrix.json" if directory.is_dir() else directory
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TopologyError([Problem(where, "", "no matrix.json here (did that shard run?)")], "merge") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TopologyError([Problem(where, "", f"cannot read it: {exc}")], "merge") from None
    problem = version_problem(data, where)
    if problem:
        raise TopologyError([Problem(where, "schema_version", problem)], "merge")
    try:
        # a file without a version predates versions: version 1's shape
        MatrixDoc.model_validate({"schema_version": SCHEMA_VERSION, **data} if isinstance(data, dict) else data)
    except ValidationError as exc:
        raise TopologyError([Problem(where, ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()],
                            "merge") from None
    rows = [_found_run_dir(path.parent, row) for row in data["rows"]]
    return Part(str(directory), {**data, "rows": rows})


def _found_run_dir(matrix_dir: Path, row: dict[str, Any]) -> dict[str, Any]:
    """A row whose run_dir points where the shard's cell directory is now (CI artifacts move directories)."""
    moved = matrix_dir / "runs" / Path(str(row.get("run_dir") or "")).name
    return {**row, "run_dir": str(moved)} if row.get("run_dir") and moved.is_dir() else row


def merge_matrices(directories: Sequence[Path], target: Path,
                   progress: Progress = lambda _label, _message: None) -> MatrixRun:
    """The shards' (or disjoint runs') matrix.json files joined into one matrix in ``target``."""
    parts = [read_part(d) for d in directories]
    merged: Merged = merge(parts)  # ShardError: the parts do not fit together
    return write_outputs(target, merged.rows, merged.elapsed_s, merged_from=merged.merged_from, progress=progress)
