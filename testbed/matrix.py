"""The MTA matrix: every reproduction, every variant, every MTA in every role, per Debian release.

It answers "does my MTA lose the bounce too?" and "did the new release change
anything?": one lab per cell, then an outcomes table (Markdown and JSON) and,
across suites, what changed (versions, outcomes, log formats).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from .errors import Problem, TopologyError
from .adapters import software_by_kind
from .model import Name, Strict, Topology, load_topology, mta_host_names, variant_names
from .report import tidy
from .results import RunResult
from .source import load_yaml
from .track import History, Hop

MTAS = software_by_kind()["mta"]


class MatrixSpec(Strict):
    """topologies/matrix.yaml: which reproductions, and which mixed assignments."""

    scenarios: list[Name]
    mtas: list[str] = Field(default_factory=lambda: list(MTAS))
    #: scenario -> label -> {host: software}; hosts left out keep the topology's software.
    mixed: dict[Name, dict[str, dict[Name, str]]] = Field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    scenario: str
    variant: str
    suite: str
    label: str  # "all exim" or a mixed assignment's name
    software: tuple[tuple[str, str], ...]  # (host, software), sorted

    @property
    def id(self) -> str:
        return cell_id(self.scenario, self.variant, self.suite, self.label)

    @property
    def overrides(self) -> dict[str, str]:
        return {"suite": self.suite, **{f"hosts.{host}.software": sw for host, sw in self.software}}


def cell_id(scenario: str, variant: str, suite: str, assignment: str) -> str:
    """A cell's stable name: `scenario/variant/suite/assignment` (baselines and shards key cells by it).

    Scenario, variant and suite are names without a slash; the assignment's label
    comes last, so a slash in it still leaves the id unambiguous.
    """
    return f"{scenario}/{variant}/{suite}/{assignment}"


def row_cell_id(row: dict[str, Any]) -> str:
    """The cell id of an outcome row (a matrix.json row)."""
    return cell_id(row["scenario"], row["variant"], row["suite"], row["assignment"])


def load_spec(path: Path, topologies_dir: Path) -> MatrixSpec:
    doc = load_yaml(path)
    try:
        spec = MatrixSpec.model_validate(doc.data)
    except ValidationError as exc:
        raise TopologyError(
            [doc.problem(tuple(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        ) from None
    problems: list[Problem] = []
    for i, mta in enumerate(spec.mtas):
        if mta not in MTAS:
            problems.append(doc.problem(("mtas", i), f"unknown MTA {mta!r}; known: {', '.join(MTAS)}"))
    for i, scenario in enumerate(spec.scenarios):
        if not (topologies_dir / f"{scenario}.yaml").exists():
            problems.append(doc.problem(("scenarios", i), f"no topology {scenario}.yaml in {topologies_dir}"))
    for scenario, assignments in spec.mixed.items():
        path_ = topologies_dir / f"{scenario}.yaml"
        hosts = load_yaml(path_).data.get("hosts", {}) if path_.exists() else {}
        for label, assignment in assignments.items():
            for host, sw in assignment.items():
                where = ("mixed", scenario, label, host)
                if not isinstance(hosts.get(host), dict) or hosts[host].get("kind") != "mta":
                    problems.append(doc.problem(where, f"{scenario} has no MTA host {host!r}"))
                elif sw not in MTAS:
                    problems.append(doc.problem(where, f"unknown MTA {sw!r}; known: {', '.join(MTAS)}"))
    if problems:
        raise TopologyError(problems)
    return spec


def cells(spec: MatrixSpec, topologies_dir: Path, suites: Sequence[str], mtas: Sequence[str] | None = None) -> list[Cell]:
    """Every (scenario, variant, suite, assignment) the spec asks for."""
    chosen = [m for m in spec.mtas if not mtas or m in mtas]
    out = []
    for scenario in spec.scenarios:
        path = topologies_dir / f"{scenario}.yaml"
        data = load_yaml(path).data
        assignments = [(f"all {m}", {h: m for h in mta_host_names(data)}) for m in chosen]
        assignments += [(label, dict(a)) for label, a in spec.mixed.get(scenario, {}).items()]
        for suite in suites:
            for variant in variant_names(data):
                for label, assignment in assignments:
                    out.append(Cell(scenario, variant, suite, label, tuple(sorted(assignment.items()))))
    return out


def topology_for(cell: Cell, topologies_dir: Path) -> Topology:
    return load_topology(topologies_dir / f"{cell.scenario}.yaml", cell.variant, cell.overrides)


# --- outcomes -------------------------------------------------------------------------


def _hop_text(hop: Hop | None) -> str:
    if hop is None:
        return "-"
    reason = f" ({hop.reason[:80]})" if hop.reason and hop.outcome not in ("delivered", "relayed") else ""
    return f"{hop.host}: {hop.outcome}{reason}"


def _decisive(hist: History) -> str:
    """The one log line that says why the message (or its bounce) ended where it did."""
    for candidate in [*(d for d in hist.dsns if not d.delivered), hist]:
        if candidate.hops and candidate.hops[-1].evidence:
            return tidy(candidate.hops[-1].evidence[-1])
    return "-"


def _route(hist: History | None) -> list[dict[str, Any]]:
    """The hosts it passed, each with the family it left that host over (None: it did not, or no address)."""
    return [{"host": h.host, "family": h.family} for h in hist.hops] if hist else []


def outcome(cell: Cell, result: RunResult, message: str = "m1") -> dict[str, Any]:
    hist = result.histories.get(message)
    passed = sum(c.status == "pass" for c in result.checks)
    total = sum(c.status != "n/a" for c in result.checks)
    row: dict[str, Any] = {
        "scenario": cell.scenario,
        "variant": cell.variant,
        "suite": cell.suite,
        "assignment": cell.label,
        "software": dict(cell.software),
        "as_expected": result.passed,
        "expectations": f"{passed}/{total}",
        "error": result.error,
        "versions": result.versions,
        "run_dir": str(result.run_dir.path),
    }
    if hist is None:
        return {**row, "delivered": None, "dsn_at_sender": None, "state": None, "bounce_state": None,
                "message_ended": "-", "bounce_ended": "-", "decisive": "-", "queue_ids": {}}
    bounce = hist.dsns[-1] if hist.dsns else None
    queue_ids: dict[str, list[str]] = {}
    for h in hist.hops + [x for d in hist.dsns for x in d.hops]:
        queue_ids.setdefault(dict(cell.software).get(h.host, "?"), []).append(h.queue_id)
    return {
        **row,
        "delivered": hist.delivered,
        "dsn_at_sender": hist.dsn_delivered,
        "state": hist.state,
        "bounce_state": bounce.state if bounce else None,
        "path": hist.path,
        "route": _route(hist),
        "bounce_route": _route(bounce),
        "message_ended": _hop_text(hist.hops[-1] if hist.hops else None),
        "bounce_ended": _hop_text(bounce.hops[-1] if bounce and bounce.hops else None) if bounce else "no bounce",
        "decisive": _decisive(hist),
        "queue_ids": queue_ids,
    }


def _yes(value: bool | None) -> str:
    return {True: "yes", False: "no", None: "?"}[value]


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| scenario | variant | suite | MTAs | delivered | bounce at sender | state | message ended | bounce ended | decisive log line | as expected |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        decisive = str(r["decisive"]).replace("|", "\\|")
        lines.append(
            f"| {r['scenario']} | {r['variant']} | {r['suite']} | {r['assignment']} | {_yes(r['delivered'])} "
            f"| {_yes(r['dsn_at_sender'])} | {r['state'] or '-'} | {r['message_ended']} | {r['bounce_ended']} "
            f"| `{decisive[:220]}` | {'yes' if r['as_expected'] else 'NO'} ({r['expectations']}) |"
        )
    return "\n".join(lines) + "\n"


_COMPARED = ("delivered", "dsn_at_sender", "state", "message_ended", "bounce_ended")


def suite_changes(rows: list[dict[str, Any]]) -> str:
    """What differs between Debian releases: versions, outcomes, queue id formats."""
    suites = sorted({r["suite"] for r in rows})
    if len(suites) < 2:
        return ""
    out = [f"## What changed between {' and '.join(suites)}", "", "### Versions", ""]
    for suite in suites:
        versions: dict[str, str] = {}
        for r in rows:
            if r["suite"] == suite:
                versions.update(r.get("versions") or {})
        out.append(f"- {suite}: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    out += ["", "### Outcomes", ""]
    by_key: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_key.setdefault((r["scenario"], r["variant"], r["assignment"]), {})[r["suite"]] = r
    changed = 0
    for key, per_suite in sorted(by_key.items()):
        if len(per_suite) < 2:
            continue
        first, *others = (per_suite[s] for s in suites if s in per_suite)
        for other in others:
            diffs = [f"{f}: {first[f]} → {other[f]}" for f in _COMPARED if _short(first[f]) != _short(other[f])]
            if diffs:
                changed += 1
                out.append(f"- {' / '.join(key)}: " + "; ".join(diffs))
    if not changed:
        out.append("- no outcome changed")
    out += ["", "### Log formats (queue id lengths seen)", ""]
    lengths: dict[tuple[str, str], set[int]] = {}
    for r in rows:
        for software, ids in (r.get("queue_ids") or {}).items():
            lengths.setdefault((software, r["suite"]), set()).update(len(i) for i in ids)
    for software in sorted({s for s, _ in lengths}):
        parts = [f"{suite}: {'/'.join(map(str, sorted(lengths.get((software, suite), set())))) or '-'}" for suite in suites]
        out.append(f"- {software}: " + ", ".join(parts))
    return "\n".join(out) + "\n"


def _short(value: Any) -> Any:
    """Compare outcomes without the volatile parts (queue ids, addresses in reasons)."""
    if isinstance(value, str):
        return value.split(" (", 1)[0]
    return value
