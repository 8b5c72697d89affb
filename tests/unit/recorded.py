"""Real logs recorded from labs (tests/data), and the plan that matches them.

The recorded mx-routing runs used the first free address slots, so planning
the same topology with nothing in use gives the same addresses.
"""

from __future__ import annotations

import json
from pathlib import Path

from testbed.model import load_topology
from testbed.plan import EngineCaps, LabPlan, plan_lab

DATA = Path(__file__).resolve().parents[1] / "data"
TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def recorded_dir(software: str, suite: str, case: str) -> Path:
    return DATA / software / suite / case


def recorded_logs(software: str, suite: str, case: str) -> dict[str, str]:
    d = recorded_dir(software, suite, case)
    return {p.stem: p.read_text() for p in sorted(d.glob("*.log"))}


def recorded_message_ids(software: str, suite: str, case: str) -> dict[str, str]:
    return json.loads((recorded_dir(software, suite, case) / "message-ids.json").read_text())


def mx_routing_plan(
    variant: str = "broken", software: str = "postfix", run_id: str = "recorded", **overrides: object
) -> LabPlan:
    """``overrides``: more dotted topology paths, e.g. ``**{"timing.settle_quiet": 0}``."""
    every_mta = {f"hosts.{h}.software": software for h in ("relay", "mail", "mx10", "mx20", "mx30")}
    topo = load_topology(TOPOLOGIES / "mx-routing.yaml", variant, {**every_mta, **overrides})
    return plan_lab(topo, run_id, EngineCaps((1, 41)))
