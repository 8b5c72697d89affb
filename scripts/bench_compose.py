#!/usr/bin/env python3
"""The testbed's bring-up and teardown against docker-compose, for the same lab, side by side.

    python scripts/bench_compose.py                         # mx-routing, 3 rounds
    python scripts/bench_compose.py --rounds 5 --variant fixed --json out.json

Each round plans the lab afresh (its own run id and free subnets) twice: once for
the testbed (``Lab.create_networks`` + render + ``Lab.up``: networks, containers,
every host ready and the routed paths checked, as ``testbed reproduce`` does; then
``Lab.teardown``), and once for docker-compose, with a compose file this script
generates from the plan (``testbed.composefile``: the same image ids, networks,
addresses, limits and volumes; the rendered files bind-mounted). Compose is timed
from ``up -d`` to its exit (every container created and running, nothing known
about the services) and for ``down -v``. Rounds alternate which goes first; one
warm-up round of each comes first and is not counted (``--warmup``).

Targets (checked here, never in tests): testbed bring-up (all hosts ready) at most
1.0x compose's ``up -d`` (all containers running), teardown at most 1.0x ``down``,
at the median. The machine's load is printed with every figure.

Needs Debian's ``docker-compose`` (``apt-get install docker-compose``) and the
lab's images (built first if missing, under the build lock). Every object carries
the run's labels, so ``testbed down`` cleans up after an interrupted run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from testbed import fabric  # noqa: E402
from testbed.adapters import adapter_for  # noqa: E402
from testbed.composefile import compose_file, write_files  # noqa: E402
from testbed.model import load_topology  # noqa: E402
from testbed.owner import owner_labels  # noqa: E402
from testbed.plan import LabPlan  # noqa: E402
from testbed.render import lab_files  # noqa: E402
from testbed.runner import ImageIds, _replan, ensure_images_for, plan_runs  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
TARGET_RATIO = 1.0
COMPOSE = "docker-compose"


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def compose_binary() -> str:
    """docker-compose's path, or exit saying how to get it."""
    path = shutil.which(COMPOSE)
    if path is None:
        raise SystemExit(
            "docker-compose is not installed; this benchmark compares the testbed with it.\n"
            "On Debian: apt-get install docker-compose (then run this script again)."
        )
    return path


def data_dirs(plan: LabPlan) -> dict[str, tuple[str, ...]]:
    return {h.name: adapter_for(h.software).data_dirs for h in plan.hosts.values()}


def fresh_plan(client, path: Path, variant: str | None, suite: str | None) -> LabPlan:
    plan = plan_runs(client, [load_topology(path, variant)], suite)[0]
    plan.labels.update(owner_labels(False))
    return plan


def testbed_round(client, path: Path, variant: str | None, suite: str | None, images: ImageIds) -> tuple[float, float]:
    """(bring-up, teardown) seconds of one testbed lab, timed as runner.run_one times them."""
    plan = fresh_plan(client, path, variant, suite)
    lab = fabric.Lab(client, plan, images=images)
    try:
        start = time.monotonic()
        lab.create_networks(lambda used: _replan(plan, used))
        lab.up(lab_files(lab.plan), data_dirs(lab.plan))
        up = time.monotonic() - start
    finally:
        start = time.monotonic()
        lab.teardown()
        down = time.monotonic() - start
    return up, down


def _run(cmd: list[str], cwd: Path) -> float:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    seconds = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds


def compose_round(client, path: Path, variant: str | None, suite: str | None, images: ImageIds,
                  binary: str) -> tuple[float, float]:
    """(up -d, down -v) seconds of the same lab as a compose project."""
    with tempfile.TemporaryDirectory(prefix="testbed-compose-") as tmp:
        work = Path(tmp)
        # Under the subnet lock, as the testbed's networks are made: nobody else may
        # take the planned subnets between planning and creating them.
        with fabric.subnet_lock(client):
            plan = fresh_plan(client, path, variant, suite)
            files = lab_files(plan)
            write_files(files, work / "files")
            ids = {name: image_id for (s, name), image_id in images.items() if s == plan.suite}
            data = compose_file(plan, ids, files, data_dirs(plan), work / "files")
            (work / "docker-compose.yml").write_text(yaml.safe_dump(data, sort_keys=False))
            project = ["-p", f"tbc{plan.run_id}", "-f", str(work / "docker-compose.yml")]
            try:
                up = _run([binary, *project, "up", "-d", "--no-build"], work)
            except BaseException:
                subprocess.run([binary, *project, "down", "-v"], cwd=work, capture_output=True)
                raise
        running = [c for c in fabric.lab_containers(client, plan.run_id) if c.get("State") == "running"]
        if len(running) != len(plan.hosts):
            print(f"  note: {len(running)} of {len(plan.hosts)} compose containers running after up -d", flush=True)
        down = _run([binary, *project, "down", "-v"], work)
    return up, down


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 2), "median": round(statistics.median(values), 2), "max": round(max(values), 2)}


def ratio_line(name: str, ours: list[float], theirs: list[float]) -> tuple[str, float]:
    a, b = summary(ours), summary(theirs)
    ratio = a["median"] / b["median"]
    per_round = ", ".join(f"{x / y:.2f}" for x, y in zip(ours, theirs))
    return (f"  {name}: testbed {a['min']:.2f} / {a['median']:.2f} / {a['max']:.2f} s, "
            f"compose {b['min']:.2f} / {b['median']:.2f} / {b['max']:.2f} s (min / median / max); "
            f"ratio at the median {ratio:.2f}x (per round {per_round}; target <= {TARGET_RATIO:.1f}x "
            f"{'met' if ratio <= TARGET_RATIO else 'MISSED'})"), ratio


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--topology", default="mx-routing", help="name in topologies/ or a path (default mx-routing)")
    ap.add_argument("--variant", help="the topology's variant (default: its base)")
    ap.add_argument("--suite", help="bookworm or trixie (default: the topology's)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, each one testbed and one compose lab (default 3)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="unmeasured rounds first (default 1: the first start after a while reads the images from disk)")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    args = ap.parse_args()

    binary = compose_binary()
    path = Path(args.topology) if Path(args.topology).exists() else REPO / "topologies" / f"{args.topology}.yaml"
    client = fabric.connect()
    plan = fresh_plan(client, path, args.variant, args.suite)
    images = ensure_images_for([plan])
    version = subprocess.run([binary, "version", "--short"], capture_output=True, text=True).stdout.strip()
    print(f"{path.stem}{'/' + args.variant if args.variant else ''}: {len(plan.hosts)} containers, "
          f"{len(plan.segments)} networks, suite {plan.suite}; engine {fabric.engine_version(client)}, "
          f"docker-compose {version}", flush=True)

    runs: dict[str, list[float]] = {"testbed_up": [], "testbed_down": [], "compose_up": [], "compose_down": []}
    sides: dict[str, Callable[[], tuple[float, float]]] = {
        "testbed": lambda: testbed_round(client, path, args.variant, args.suite, images),
        "compose": lambda: compose_round(client, path, args.variant, args.suite, images, binary),
    }
    for i in range(-args.warmup, args.rounds):
        order = ["testbed", "compose"] if i % 2 == 0 else ["compose", "testbed"]
        for side in order:
            up, down = sides[side]()
            if i < 0:
                print(f"warm-up {side:8} up {up:6.2f} s  down {down:6.2f} s  ({load()})", flush=True)
                continue
            runs[f"{side}_up"].append(up)
            runs[f"{side}_down"].append(down)
            print(f"round {i + 1} {side:8} up {up:6.2f} s  down {down:6.2f} s  ({load()})", flush=True)

    print(f"\nbring-up and teardown over {args.rounds} rounds ({load()}):")
    up_line, up_ratio = ratio_line("bring-up (testbed: all hosts ready; compose: up -d)", runs["testbed_up"],
                                   runs["compose_up"])
    down_line, down_ratio = ratio_line("teardown (testbed: teardown; compose: down -v)", runs["testbed_down"],
                                       runs["compose_down"])
    print(up_line)
    print(down_line)
    if args.json:
        report = {k: {"runs": [round(x, 2) for x in v], **summary(v)} for k, v in runs.items()}
        report.update(up_ratio=round(up_ratio, 3), down_ratio=round(down_ratio, 3), load=os.getloadavg())
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if up_ratio <= TARGET_RATIO and down_ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
