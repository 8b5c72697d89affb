"""A lab plan as plan.json, and back (pure).

The runner writes every lab's plan into its run directory; a kept lab is
found again later (``testbed exec``, ``check``, the pytest plugin) by reading
that file back into the same ``LabPlan``, so the commands that work in a
live lab see exactly the addresses, routes and mail roles it was built with,
without planning again. pydantic validates the plan's dataclasses (addresses
and networks included) from the JSON; the topology is the variant as run,
without the other variants.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import TestbedError
from .model import Topology
from .plan import LabPlan

_PLAN = TypeAdapter(LabPlan)


class PlanFileError(TestbedError):
    """plan.json is missing or not a plan this testbed can read."""


def plan_to_dict(plan: LabPlan) -> dict[str, Any]:
    def convert(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "topology"}
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, ipaddress.IPv4Address | ipaddress.IPv6Address | ipaddress.IPv4Network | ipaddress.IPv6Network
                      | ipaddress.IPv4Interface | ipaddress.IPv6Interface):
            return str(value)
        if isinstance(value, BaseModel):  # a host's gai_conf
            return value.model_dump(mode="json")
        return value

    data = convert(plan)
    data["topology"] = plan.topology.model_dump(mode="json", by_alias=True, exclude={"variants"})
    return data


def plan_from_dict(data: dict[str, Any]) -> LabPlan:
    """The plan ``plan_to_dict`` wrote (its topology without the variants that did not run)."""
    return _PLAN.validate_python({**data, "topology": Topology.model_validate(data["topology"])})


def read_plan(path: Path) -> LabPlan:
    """RUN_DIR/plan.json -> the lab's plan; one clear error when it is gone or unreadable."""
    try:
        data = json.loads(path.read_text())
        return plan_from_dict(data)
    except FileNotFoundError:
        raise PlanFileError(f"{path} is gone: the lab's run directory was moved or removed") from None
    except (OSError, ValueError, KeyError, TypeError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PlanFileError(f"{path} is not a plan this testbed can read ({first})") from None
