"""Baselines: every matrix cell's outcome saved, and a later run compared with it (pure).

``testbed matrix --save-baseline FILE`` writes ``build(rows)``;
``--baseline FILE`` reads it (``load``) and ``compare``s the new run's: a
cell whose *outcome* changed fails the run; new software versions alone are
printed, never a failure. docs/regression.md describes the commands and the
file; docs/schemas/baseline.schema.json is ``baseline_json_schema()``.

What counts as the outcome (``OUTCOME_FIELDS``): whether the cell behaved as
its topology expects, whether the message was delivered, whether its bounce
reached the sender, the message's and the bounce's states, where each ended
(host and outcome, without the reason text, which holds queue ids and
addresses that change every run) and the hosts of its path and its bounce's.
Noted, never a failure: new versions, and the families of the route's hops.
Families flap on their own: Postfix's default ``smtp_address_preference =
any`` picks IPv4 or IPv6 at random for each delivery to a dual-stack peer (the
shards' integration test saw relay-bounce/fixed/all postfix go to mx10 over
IPv4 in one run and over IPv6 in the next). The decisive log line is saved
and shown beside a change, never compared: it holds times, process ids and
queue ids.

Cells are keyed by the cell id (``matrix.cell_id``). A baseline cell the new
run does not have is reported as not run, not as a failure: the matrix writes
a row for every cell it selects, even a lab that failed, so a cell can only be
absent because the run was narrowed on purpose (``--mta``, ``--suite``,
``--shard``, another spec; ``matrix merge`` refuses a missing shard). A new
cell is reported too; whether it behaves as expected is the matrix's own
verdict.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError

from . import __version__
from .errors import Problem, TopologyError
from .matrix import row_cell_id
from .model import MessageState
from .resultschema import MatrixCell, Open, RouteHop, json_schema_of

#: The version of the baseline file's shape (changes like result.json's: a key renamed, removed or re-meant).
BASELINE_VERSION = "1"


class BaselineCell(MatrixCell):
    """One cell's outcome, as a matrix run concluded it."""

    as_expected: bool = Field(description="the lab passed its topology's expectations")
    delivered: bool | None = Field(description="the message reached a recipient (null: not tracked)")
    dsn_at_sender: bool | None = Field(description="its bounce was delivered to the sender (null: not tracked)")
    state: MessageState | None = Field(description="the message's state (null: not tracked)")
    bounce_state: MessageState | None = Field(description="its last bounce's own state (null: no bounce)")
    message_ended: str = Field(description="`host: outcome` of its last hop (`-`: none); compared without a reason")
    bounce_ended: str = Field(description="the same for its bounce; `no bounce`, `-`: none")
    route: list[RouteHop] = Field(description="the hosts it passed (compared), each with the family it left over "
                                              "(a change is printed, not a failure)")
    bounce_route: list[RouteHop] = Field(description="the same for its last bounce")
    decisive: str = Field(description="the log line that decided where it ended; shown, never compared")
    error: str | None = Field(description="why the lab could not be run or judged (null: it was)")
    versions: dict[str, str] = Field(description="software -> version seen; a change is printed, not a failure")


class Baseline(Open):
    """A baseline file: every cell of a matrix run, by cell id."""

    schema_version: Literal[BASELINE_VERSION] = Field(  # type: ignore[valid-type]
        BASELINE_VERSION, description="the version of this file's shape")
    testbed_version: str = Field(description="the testbed that wrote it")
    cells: dict[str, BaselineCell] = Field(
        description="cell id (`scenario/variant/suite/assignment`) -> its outcome, in the matrix's order")


#: What a change in fails the comparison (docs/regression.md lists them too); `path`: the route's hosts.
OUTCOME_FIELDS = ("as_expected", "delivered", "dsn_at_sender", "state", "bounce_state",
                  "message_ended", "bounce_ended", "path", "bounce_path")
#: What a change in is printed, never a failure (besides the versions).
NOTED_FIELDS = ("route", "bounce_route")


def _field(cell: BaselineCell, name: str) -> Any:
    if name in ("path", "bounce_path"):
        return [h.host for h in (cell.route if name == "path" else cell.bounce_route)]
    return getattr(cell, name)


def _ended(text: str) -> str:
    """`host: outcome (reason)` -> `host: outcome`: the reason holds queue ids and addresses."""
    return text.split(" (", 1)[0]


def build(rows: Sequence[dict[str, Any]]) -> Baseline:
    """The baseline of a matrix run's rows (``matrix.outcome`` rows, or matrix.json's)."""
    cells = {}
    for row in rows:
        cells[row_cell_id(row)] = BaselineCell(
            scenario=row["scenario"], variant=row["variant"], suite=row["suite"], assignment=row["assignment"],
            software=dict(row["software"]), as_expected=row["as_expected"], delivered=row["delivered"],
            dsn_at_sender=row["dsn_at_sender"], state=row["state"], bounce_state=row.get("bounce_state"),
            message_ended=_ended(row["message_ended"]), bounce_ended=_ended(row["bounce_ended"]),
            route=[RouteHop(**h) for h in row.get("route") or []],
            bounce_route=[RouteHop(**h) for h in row.get("bounce_route") or []],
            decisive=row["decisive"], error=row["error"], versions=dict(row.get("versions") or {}))
    return Baseline(testbed_version=__version__, cells=cells)


def dump(baseline: Baseline) -> str:
    return json.dumps(baseline.model_dump(mode="json"), indent=2) + "\n"


def load(path: Path) -> Baseline:
    """A baseline file, checked; every problem (unreadable, not JSON, another version, a bad key) as TopologyError."""
    where = str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TopologyError([Problem(where, "", "no such file (write one with --save-baseline)")], "baseline") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TopologyError([Problem(where, "", f"cannot read it: {exc}")], "baseline") from None
    except json.JSONDecodeError as exc:
        raise TopologyError([Problem(where, "", f"not JSON: {exc}")], "baseline") from None
    version = data.get("schema_version") if isinstance(data, dict) else None
    if isinstance(data, dict) and version != BASELINE_VERSION:
        raise TopologyError([Problem(where, "schema_version",
                                     f"{version!r}: this testbed reads baseline version {BASELINE_VERSION!r} "
                                     f"(write a new one with --save-baseline)")], "baseline")
    try:
        return Baseline.model_validate(data)
    except ValidationError as exc:
        problems = [Problem(where, ".".join(map(str, e["loc"])), e["msg"]) for e in exc.errors()]
        raise TopologyError(problems, "baseline") from None


def baseline_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a baseline file (docs/schemas/baseline.schema.json)."""
    return json_schema_of(Baseline, "baseline",
                          "Every cell of a matrix run and its outcome, written by `testbed matrix --save-baseline` "
                          "and compared by `--baseline` (docs/regression.md).", version=BASELINE_VERSION)


# --- comparing ---------------------------------------------------------------------------

#: changed: an outcome (a failure); noted: only versions or route families; not run / new: on one side only.
DifferenceKind = Literal["changed", "noted", "not run", "new"]


@dataclass(frozen=True)
class FieldChange:
    name: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.name}: {_show(self.before)} → {_show(self.after)}"


@dataclass(frozen=True)
class CellDifference:
    """How one cell differs from the baseline: its outcome, only noted fields, or it is on one side only."""

    cell: str
    kind: DifferenceKind
    changes: tuple[FieldChange, ...] = ()
    decisive: tuple[str, str] | None = None  # (baseline's, new run's), shown beside an outcome change

    @property
    def failure(self) -> bool:
        return self.kind == "changed"

    def lines(self) -> list[str]:
        head = {"changed": "OUTCOME CHANGED", "noted": "changed, not a failure",
                "not run": "not run (in the baseline)", "new": "new cell (not in the baseline)"}[self.kind]
        out = [f"{self.cell}: {head}"] + [f"    {c}" for c in self.changes]
        if self.decisive and self.decisive[0] != self.decisive[1]:
            out += [f"    decisive before: {self.decisive[0]}", f"    decisive now:    {self.decisive[1]}"]
        return out


@dataclass(frozen=True)
class Comparison:
    differences: list[CellDifference] = field(default_factory=list)
    compared: int = 0  # cells in both

    @property
    def failed(self) -> bool:
        return any(d.failure for d in self.differences)

    def by_cell(self) -> dict[str, CellDifference]:
        return {d.cell: d for d in self.differences}

    def count(self, kind: DifferenceKind) -> int:
        return sum(d.kind == kind for d in self.differences)

    def summary(self) -> str:
        changed = self.count("changed")
        verdict = f"{changed} cell{'s' if changed != 1 else ''} changed outcome" if changed else "no outcome changed"
        extra = [f"{self.count(k)} {label}" for k, label in (("noted", "with new versions or route families"),
                                                             ("not run", "of the baseline not run"),
                                                             ("new", "new")) if self.count(k)]
        return f"baseline: {verdict} ({self.compared} compared" + "".join(f", {e}" for e in extra) + ")"

    def text(self) -> str:
        return "\n".join([line for d in self.differences for line in d.lines()] + [self.summary()]) + "\n"


def compare(before: Baseline, after: Baseline, elsewhere: frozenset[str] = frozenset()) -> Comparison:
    """Every cell's differences between a baseline and a new run's baseline, in the new run's order.

    ``elsewhere``: cells another shard of the same matrix runs, left out rather than reported as not run.
    """
    differences: list[CellDifference] = []
    compared = 0
    for cid, new in after.cells.items():
        old = before.cells.get(cid)
        if old is None:
            differences.append(CellDifference(cid, "new"))
            continue
        compared += 1
        outcome = tuple(FieldChange(f, _field(old, f), _field(new, f)) for f in OUTCOME_FIELDS
                        if _field(old, f) != _field(new, f))
        if outcome and old.error != new.error:  # why a lab failed explains its outcome; alone it is not one
            outcome += (FieldChange("error", old.error, new.error),)
        noted = tuple(FieldChange(f, getattr(old, f), getattr(new, f)) for f in NOTED_FIELDS
                      if getattr(old, f) != getattr(new, f))
        noted += tuple(FieldChange(f"version of {sw}", old.versions.get(sw), new.versions.get(sw))
                       for sw in sorted(old.versions.keys() | new.versions.keys())
                       if old.versions.get(sw) != new.versions.get(sw))
        if outcome:
            differences.append(CellDifference(cid, "changed", outcome + noted, (old.decisive, new.decisive)))
        elif noted:
            differences.append(CellDifference(cid, "noted", noted))
    differences += [CellDifference(cid, "not run") for cid in before.cells
                    if cid not in after.cells and cid not in elsewhere]
    return Comparison(differences, compared)


def _show(value: Any) -> str:
    if isinstance(value, list):  # a route (relay -ipv6-> mx10) or a path (relay mx10)
        return " ".join(h if isinstance(h, str) else h.host + (f" -{h.family}->" if h.family else "")
                        for h in value) or "(none)"
    if value is None:
        return "-"
    return str(value)
