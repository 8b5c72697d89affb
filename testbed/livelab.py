"""Finding a live lab again: by its handle or run id, from the labels of its Docker objects.

`testbed up` keeps a lab; the commands that work in it later (`exec`, `shell`,
`logs`, `stop`, `start`, `down`, and `check` and the pytest plugin after
them) name it by its handle (``mx-routing-1``) or run id. The labels say where
its run directory is; its plan.json gives back the exact plan it was built
with (``planstore``), and ``fabric.Lab`` on that plan is the same live-lab API
the runner and the scenario use (``labapi.LiveLab``).

A kept lab may carry an expiry (``--ttl``): `testbed ps` shows it, and
`testbed up` and `testbed down --expired` remove labs past it, whoever made
them (an expired lab is nobody's any more).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import docker

from . import fabric
from .errors import NoSuchLab
from .model.hints import did_you_mean
from .plan import LABEL_EXPIRES, LABEL_HANDLE, LABEL_RUN_DIR
from .planstore import read_plan

_TTL = re.compile(r"\s*(\d+)\s*(s|m|h|d)\s*")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: A week: a course's lab may stay up that long, not forever.
MAX_TTL_S = 7 * 86400


def parse_ttl(text: str) -> float:
    """"90m", "2h", "3d" -> seconds; ValueError with what is accepted otherwise."""
    match = _TTL.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a time to live: give a number with s, m, h or d, e.g. 90m, 2h, 3d")
    seconds = int(match.group(1)) * _UNIT_S[match.group(2)]
    if seconds > MAX_TTL_S:
        raise ValueError(f"{text!r} is longer than the longest time to live, 7d")
    return float(seconds)


def expires_at(labels: Mapping[str, str]) -> float | None:
    try:
        return float(labels[LABEL_EXPIRES])
    except (KeyError, ValueError):
        return None


def is_expired(labels: Mapping[str, str], now: float | None = None) -> bool:
    at = expires_at(labels)
    return at is not None and at <= (now if now is not None else time.time())


def remaining(labels: Mapping[str, str], now: float | None = None) -> str:
    """"1 h 20 min", "expired", or "-" (no expiry), for `testbed ps`."""
    at = expires_at(labels)
    if at is None:
        return "-"
    left = at - (now if now is not None else time.time())
    if left <= 0:
        return "expired"
    hours, minutes = divmod(int(left // 60), 60)
    return f"{hours} h {minutes} min" if hours else f"{max(minutes, 1)} min"


@dataclass(frozen=True)
class LabRef:
    run_id: str
    handle: str
    labels: dict[str, str]

    @property
    def run_dir(self) -> Path | None:
        path = self.labels.get(LABEL_RUN_DIR)
        return Path(path) if path else None


def resolve(runs: Mapping[str, fabric.RunObjects], name: str) -> LabRef:
    """The lab called ``name`` (its handle or run id) among the engine's runs; NoSuchLab with a hint."""
    for run_id, objs in runs.items():
        if name in (run_id, objs.labels.get(LABEL_HANDLE)):
            return LabRef(run_id, objs.labels.get(LABEL_HANDLE, ""), dict(objs.labels))
    known = sorted(o.labels.get(LABEL_HANDLE) or run_id for run_id, o in runs.items())
    if not known:
        raise NoSuchLab(f"no lab called {name!r}: no testbed lab is running (`testbed up TOPOLOGY` starts one)")
    raise NoSuchLab(f"no lab called {name!r}{did_you_mean(name, known)}; running: {', '.join(known)} "
                    "(`testbed ps` lists them)")


def attach(client: docker.DockerClient, name: str) -> tuple[LabRef, fabric.Lab]:
    """The live lab called ``name``, as a ``fabric.Lab`` on the plan it was built with."""
    ref = resolve(fabric.list_runs(client), name)
    if ref.run_dir is None:
        raise NoSuchLab(f"lab {name!r} (run {ref.run_id}) was made by an older testbed without a run directory "
                        f"label; `testbed down {ref.run_id}` removes it")
    plan = read_plan(ref.run_dir / "plan.json")
    if plan.run_id != ref.run_id:
        raise NoSuchLab(f"{ref.run_dir / 'plan.json'} belongs to run {plan.run_id}, not to lab {name!r} "
                        f"(run {ref.run_id})")
    return ref, fabric.Lab(client, plan)


def reap_expired(client: docker.DockerClient) -> list[str]:
    """Remove every lab past its expiry; the handles (or run ids) removed."""
    gone = []
    for run_id, objs in fabric.list_runs(client).items():
        if is_expired(objs.labels):
            fabric.teardown(client, run_id)
            gone.append(objs.labels.get(LABEL_HANDLE) or run_id)
    return gone

