"""What one lab run produced: the plan, the verdict, the histories, the steps, the timings.

The runner fills a ``RunResult``; reports and the matrix read it (and only it),
so they never need the runner or a lab.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .capture import CaptureFile
from .clientrun import ClientResult
from .plan import LabPlan
from .resultschema import result_document
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
    engine: str = ""  # "Docker 20.10.24+dfsg1 (API 1.41)"
    captures: list[CaptureFile] = field(default_factory=list)  # one pcap per segment (capture.py)

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
            "engine": self.engine,
            "passed": self.passed,
            "error": self.error,
            "expectations": [c.to_dict() for c in self.checks],
            "messages": {k: h.to_dict() for k, h in self.histories.items()},
            "clients": {k: c.to_dict() for k, c in self.clients.items()},
            "steps": self.steps,
            "timings_s": {k: round(v, 2) for k, v in self.timings.items()},
            "run_dir": str(self.run_dir.path),
            "kept": self.kept,
            "captures": [c.to_dict() for c in self.captures],
        }

    def document(self) -> dict[str, Any]:
        """result.json's content: ``to_dict()`` checked against ``resultschema.RunResultDoc``, with its version.

        A shape the model does not describe raises (pydantic's ValidationError): a bug, caught by the tests.
        """
        return result_document(self.to_dict())


#: What a hop says about the outcome; its queue id, address, reply text and log lines
#: differ between two runs of the same lab (other subnets, other ids, other times).
#: So does its family where both ends are dual stack: Postfix picks one of the
#: next hop's addresses at random (smtp_address_preference = any, its default), so
#: mx20 -> mx10 went over IPv4 in one slow run and IPv6 in the next. Where only one
#: family can work, the path and the expectations already pin it.
_HOP_OUTCOME = ("host", "outcome", "next_host", "in_queue")


def outcome_signature(result: dict[str, Any]) -> dict[str, Any]:
    """What a run concluded, from its result.json: comparable between runs of one lab.

    Each message's path, state, deliveries, where bounces were generated, the
    handovers (host, outcome, next host) and, nested, its
    bounces; each expectation's status; whether the run passed and failed.
    Run ids, queue ids, addresses, times and log lines are left out: they
    differ between two runs that behaved the same.
    """

    def history(h: dict[str, Any]) -> dict[str, Any]:
        return {
            "state": h.get("state"),
            "path": list(h.get("path") or []),
            "delivered_to": sorted([d["recipient"], d["host"]] for d in h.get("delivered_to") or []),
            "dsn_generated_at": list(h.get("dsn_generated_at") or []),
            "hops": [{k: hop.get(k) for k in _HOP_OUTCOME} for hop in h.get("hops") or []],
            "dsns": [history(d) for d in h.get("dsns") or []],
        }

    return {
        "passed": result.get("passed"),
        "error": result.get("error") is not None,
        "messages": {name: history(h) for name, h in sorted((result.get("messages") or {}).items())},
        "expectations": [{"description": e["description"], "status": e["status"]}
                         for e in result.get("expectations") or []],
    }


def signature_differences(reference: dict[str, Any], other: dict[str, Any], where: str = "") -> list[str]:
    """Where two outcome signatures differ, one line each (empty: the same outcome)."""
    if isinstance(reference, dict) and isinstance(other, dict):
        out: list[str] = []
        for key in sorted(set(reference) | set(other), key=str):
            out += signature_differences(reference.get(key), other.get(key), f"{where}.{key}" if where else str(key))
        return out
    if isinstance(reference, list) and isinstance(other, list) and len(reference) == len(other):
        return [d for i, (a, b) in enumerate(zip(reference, other)) for d in signature_differences(a, b, f"{where}[{i}]")]
    return [] if reference == other else [f"{where}: {reference!r} -> {other!r}"]
