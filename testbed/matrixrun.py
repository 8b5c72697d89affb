"""Running the MTA matrix: every cell a lab, side by side, then the outcomes table on disk.

``matrix.py`` is the pure part (cells, outcome rows, tables); this module
drives the labs through the runner and writes ``matrix.md`` and ``matrix.json``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import fabric
from . import matrix as mx
from .results import RunResult
from .resultschema import matrix_document
from .runner import Progress, RunOptions, ensure_images_for_topologies, plan_runs, run_plans

#: (cells done, cells in all, the cell, its outcome row) as each lab finishes.
RowProgress = Callable[[int, int, mx.Cell, dict[str, Any]], None]


@dataclass(frozen=True)
class MatrixRun:
    rows: list[dict[str, Any]]
    elapsed_s: float
    table: str
    changes: str
    target: Path

    @property
    def as_expected(self) -> bool:
        return all(r["as_expected"] for r in self.rows)


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
) -> MatrixRun:
    spec_model = mx.load_spec(spec, topologies)
    todo = mx.cells(spec_model, topologies, list(suites), list(mtas) if mtas else None)
    client = fabric.connect()
    target.mkdir(parents=True, exist_ok=True)
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
    elapsed = time.monotonic() - started
    table = mx.markdown(rows)
    changes = mx.suite_changes(rows)
    (target / "matrix.md").write_text(
        f"# MTA matrix\n\n{len(rows)} labs in {elapsed:.0f} s\n\n{table}\n{changes}")
    document = matrix_document(rows, round(elapsed, 1))  # a row of another shape raises here, in the tests
    (target / "matrix.json").write_text(json.dumps(document, indent=2) + "\n")
    try:  # each cell wrote its own report.html at its end; the matrix's page links them
        from .htmlreport import write_matrix_report

        write_matrix_report(target, cell_reports=False)
    except Exception as exc:  # noqa: BLE001 - matrix.md and matrix.json are written; the page is an addition
        image_progress("matrix", f"could not write matrix.html: {type(exc).__name__}: {exc}")
    return MatrixRun(rows, elapsed, table, changes, target)
