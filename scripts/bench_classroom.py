#!/usr/bin/env python3
"""How many exercise labs one machine holds: bring-up time, memory per lab, all checks passing.

    python scripts/bench_classroom.py --count 3 --count 6      # mx-routing-home, 3 then 6 labs
    python scripts/bench_classroom.py --exercise relay-bounce-home --count 10

For each N: `testbed up EXERCISE --count N` (timed), the teacher's solution
applied to every lab through `testbed exec` (so that every check can pass),
`testbed check` of all N side by side (timed, with the number of labs whose
checks all pass), the resident memory of each lab's containers (their memory
cgroups, sampled through bring-up and the checks: the peak per lab), and the
memory still available. Then the labs are removed. The load is printed with
every figure: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from bench_matrix import MIB, available_memory, cgroup_dir, read_cgroup  # noqa: E402

TESTBED = [sys.executable, "-m", "testbed.cli"]


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def testbed(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TESTBED, *args], cwd=cwd, capture_output=True, text=True, check=False)


class PeakMemory(threading.Thread):
    """The highest resident memory seen per run id (the sum over its containers), sampled until stopped."""

    def __init__(self, run_ids: set[str], interval: float = 1.0):
        super().__init__(daemon=True)
        import docker

        self.client, self.run_ids, self.interval = docker.from_env(), run_ids, interval
        self.peak: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            now: dict[str, int] = {}
            for c in self.client.api.containers(filters={"label": "testbed.run"}):
                run = (c.get("Labels") or {}).get("testbed.run")
                path = cgroup_dir(c["Id"]) if run in self.run_ids else None
                figures = read_cgroup(path) if path else None
                if figures:
                    now[run] = now.get(run, 0) + figures[0]
            for run, resident in now.items():
                self.peak[run] = max(self.peak.get(run, 0), resident)
            self._done.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        return self.peak


def one_class(exercise: str, count: int, cwd: Path) -> None:
    start = time.monotonic()
    proc = testbed("up", exercise, "--count", str(count), "--ttl", "1h", "--json", cwd=cwd)
    up_s = time.monotonic() - start
    labs = json.loads(proc.stdout) if proc.returncode == 0 else []
    try:
        if proc.returncode != 0:
            raise SystemExit(f"testbed up failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
        handles = [lab["handle"] for lab in labs]
        sampler = PeakMemory({lab["run_id"] for lab in labs})
        sampler.start()
        env = {**os.environ, "TESTBED": " ".join(TESTBED)}
        for handle in handles:
            subprocess.run(["sh", str(REPO / "exercises" / exercise / "solution" / "apply.sh"), handle], cwd=cwd,
                           env=env, check=True, capture_output=True)
        start = time.monotonic()
        checked = testbed("check", *handles, "--json", cwd=cwd)
        check_s = time.monotonic() - start
        peak = sampler.stop()
        results = json.loads(checked.stdout) if checked.stdout.strip().startswith("[") else []
        passing = sum(1 for r in results if r["passed"])
        per_lab = sorted(peak.values())
        median = statistics.median(per_lab) / MIB if per_lab else 0.0
        print(f"{count:>3} labs: up {up_s:6.1f} s, every check of {passing}/{count} labs passes "
              f"(check {check_s:6.1f} s); peak resident memory per lab median {median:.0f} MiB "
              f"(min {per_lab[0] / MIB:.0f}, max {per_lab[-1] / MIB:.0f}); available now "
              f"{available_memory() / MIB / 1024:.1f} GiB  ({load()})", flush=True)
    finally:
        for lab in labs:
            testbed("down", lab["run_id"], cwd=cwd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exercise", default="mx-routing-home")
    parser.add_argument("--count", type=int, action="append", help="labs at once (repeatable; default 3)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-classroom-") as tmp:
        for count in args.count or [3]:
            one_class(args.exercise, count, Path(tmp))


if __name__ == "__main__":
    main()
