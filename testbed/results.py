"""What one lab run produced: the plan, the verdict, the histories, the steps, the timings.

The runner fills a ``RunResult``; reports and the matrix read it (and only it),
so they never need the runner or a lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .clientrun import ClientResult
from .plan import LabPlan
from .rundir import RunDir
from .track import History
from .verdict import Check


@dataclass
class RunResult:
    plan: LabPlan
    run_dir: RunDir
    checks: list[Check] = field(default_factory=list)
    histories: dict[str, History] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    timings: dict[str, float] = field(default_factory=dict)
    kept: bool = False
    versions: dict[str, str] = field(default_factory=dict)  # software -> version seen in the lab
    clients: dict[str, ClientResult] = field(default_factory=dict)  # client step id -> what it did

    @property
    def label(self) -> str:
        return f"{self.plan.name}/{self.plan.variant}"

    @property
    def passed(self) -> bool:
        # At least one expectation must have applied: a lab that checked nothing proves nothing.
        return self.error is None and any(c.status == "pass" for c in self.checks) and all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        plan = self.plan
        return {
            "topology": plan.name,
            "title": plan.title,
            "study": plan.study,
            "variant": plan.variant,
            "run_id": self.plan.run_id,
            "suite": self.plan.suite,
            "software": {h.name: h.software for h in self.plan.hosts.values() if h.kind in ("mta", "mailstore")},
            "versions": self.versions,
            "passed": self.passed,
            "error": self.error,
            "expectations": [c.to_dict() for c in self.checks],
            "messages": {k: h.to_dict() for k, h in self.histories.items()},
            "clients": {k: c.to_dict() for k, c in self.clients.items()},
            "steps": self.steps,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "run_dir": str(self.run_dir.path),
            "kept": self.kept,
        }
