#!/usr/bin/env python3
"""Measure the matrix: wall time warm, and the memory each lab takes.

    python scripts/bench_matrix.py                     # the default matrix (bookworm), images warm
    python scripts/bench_matrix.py --compare OLD/matrix.json   # also: every cell's outcome as before?

Target (checked here, never in tests): the full matrix (20 labs on bookworm) in
at most 3 minutes warm. While it runs, every container of the matrix's labs
(selected by the `testbed.process` label of the matrix process) is sampled from
its memory cgroup: resident memory (anonymous + mapped file pages: what `ps`
calls RSS, summed over the lab's containers at each sample) and the cgroup's
own peak (which also counts page cache, so it is an upper bound the kernel can
partly reclaim). Per lab the largest sum is its peak; the summary is min /
median / max over the labs, per scenario, and how many labs of the largest
kind fit into the memory available now. The machine's load (uptime) is
printed with every figure.
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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bench import REPO, load, use_venv

TARGET_S = 180.0
MIB = 1024 * 1024
#: Where an engine keeps a container's memory cgroup ({id}: the full container id).
CGROUP_DIRS = (
    "/sys/fs/cgroup/memory/docker/{id}",  # v1, cgroupfs driver (Docker 20.10 on bookworm here)
    "/sys/fs/cgroup/memory/system.slice/docker-{id}.scope",  # v1, systemd driver
    "/sys/fs/cgroup/docker/{id}",  # v2, cgroupfs driver
    "/sys/fs/cgroup/system.slice/docker-{id}.scope",  # v2, systemd driver
)
#: The cgroup's own high-water mark: v1 and v2 spell it differently (v2 since kernel 5.19).
PEAK_FILES = ("memory.max_usage_in_bytes", "memory.peak")
#: The label the matrix's labs carry (testbed/owner.py): machine:pid:start time.
LABEL_PROCESS = "testbed.process"
LABEL_RUN = "testbed.run"
LABEL_LAB = "testbed.lab"


# --- pure: cgroup files to figures, samples to a summary ------------------------------


def parse_memory_stat(text: str) -> dict[str, int]:
    """memory.stat ("key value" lines) as numbers."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[key] = int(value)
    return out


def resident_bytes(stat: Mapping[str, int]) -> int:
    """Resident memory of a cgroup: anonymous plus mapped file pages (v1: rss + mapped_file; v2: anon + file_mapped)."""
    if "anon" in stat:
        return stat["anon"] + stat.get("file_mapped", 0)
    return stat.get("rss", 0) + stat.get("mapped_file", 0)


@dataclass
class LabMemory:
    """Samples of one lab's containers: the peak of their sum, and each container's cgroup peak."""

    scenario: str
    #: sample time -> container -> resident bytes
    samples: dict[float, dict[str, int]] = field(default_factory=dict)
    cgroup_peaks: dict[str, int] = field(default_factory=dict)

    def add(self, at: float, container: str, resident: int, cgroup_peak: int | None) -> None:
        self.samples.setdefault(at, {})[container] = resident
        if cgroup_peak is not None:
            self.cgroup_peaks[container] = max(cgroup_peak, self.cgroup_peaks.get(container, 0))

    @property
    def containers(self) -> int:
        return len({c for sample in self.samples.values() for c in sample})

    @property
    def peak_resident(self) -> int:
        """The largest resident total of the lab's containers seen at one sample."""
        return max((sum(s.values()) for s in self.samples.values()), default=0)

    @property
    def cgroup_peak(self) -> int:
        """Each container's own peak (page cache included), summed: peaks need not coincide, so an upper bound."""
        return sum(self.cgroup_peaks.values())


def spread(values: Iterable[float]) -> tuple[float, float, float]:
    """min, median, max."""
    ordered = sorted(values)
    if not ordered:
        return 0.0, 0.0, 0.0
    return ordered[0], statistics.median(ordered), ordered[-1]


def labs_that_fit(available_bytes: int, per_lab_bytes: int) -> int:
    """How many labs of ``per_lab_bytes`` fit into ``available_bytes`` (memory only; CPU is another matter)."""
    return available_bytes // per_lab_bytes if per_lab_bytes > 0 else 0


def memory_report(labs: Mapping[str, LabMemory], available_bytes: int) -> list[str]:
    """Lines of the summary: all labs, then per scenario, then how many labs fit."""
    measured = {run: lab for run, lab in labs.items() if lab.samples}
    if not measured:
        return ["  no lab container was sampled"]

    def line(label: str, group: list[LabMemory]) -> str:
        lo, mid, hi = spread(lab.peak_resident / MIB for lab in group)
        clo, cmid, chi = spread(lab.cgroup_peak / MIB for lab in group)
        sizes = sorted({lab.containers for lab in group})
        return (f"  {label} ({len(group)} labs, {'/'.join(map(str, sizes))} containers): resident peak "
                f"min {lo:.0f} / median {mid:.0f} / max {hi:.0f} MiB; cgroup peaks incl. page cache "
                f"{clo:.0f} / {cmid:.0f} / {chi:.0f} MiB")

    lines = [line("every lab", list(measured.values()))]
    for scenario in sorted({lab.scenario for lab in measured.values()}):
        lines.append(line(scenario, [lab for lab in measured.values() if lab.scenario == scenario]))
    largest = max(lab.peak_resident for lab in measured.values())
    lines.append(f"  memory available now {available_bytes / MIB / 1024:.1f} GiB: about "
                 f"{labs_that_fit(available_bytes, largest)} labs of the largest ({largest / MIB:.0f} MiB resident) "
                 "at once, by memory alone")
    return lines


def compare_matrices(before: list[dict], after: list[dict]) -> list[str]:
    """Cells whose outcome differs between two matrix.json rows lists (empty: every cell the same)."""
    # Not where the message and the bounce ended as text: it quotes addresses, and
    # Postfix picks a dual-stack next hop's family at random.
    keys = ("as_expected", "expectations", "state", "delivered", "dsn_at_sender", "path", "error")

    def cell(row: dict) -> tuple[str, str, str, str]:
        return row["scenario"], row["variant"], row["suite"], row["assignment"]

    old = {cell(r): r for r in before}
    new = {cell(r): r for r in after}
    out = []
    for key in sorted(set(old) | set(new)):
        if key not in old or key not in new:
            out.append(f"{'/'.join(key)}: only {'before' if key in old else 'after'}")
            continue
        for k in keys:
            a, b = old[key].get(k), new[key].get(k)
            if k == "error":
                a, b = a is not None, b is not None
            if a != b:
                out.append(f"{'/'.join(key)}: {k} {a!r} -> {b!r}")
    return out


# --- sampling the engine ------------------------------------------------------------


def cgroup_dir(container_id: str) -> Path | None:
    for pattern in CGROUP_DIRS:
        path = Path(pattern.format(id=container_id))
        if path.is_dir():
            return path
    return None


def read_cgroup(path: Path) -> tuple[int, int | None] | None:
    """(resident bytes, the cgroup's peak) of a container's memory cgroup; None once it is gone."""
    try:
        resident = resident_bytes(parse_memory_stat((path / "memory.stat").read_text()))
    except OSError:
        return None
    for name in PEAK_FILES:
        try:
            return resident, int((path / name).read_text())
        except (OSError, ValueError):
            continue
    return resident, None


class Sampler(threading.Thread):
    """Samples the containers of one process's labs until stopped."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        import docker

        self.client = docker.from_env()
        self.pid = str(pid)
        self.interval = interval
        self.labs: dict[str, LabMemory] = {}
        self.missing_cgroups: set[str] = set()
        # Where the engine's cgroups are visible, a container without a directory has just
        # been removed; only an engine whose cgroups are elsewhere needs its stats API.
        self.cgroups_here = any(Path(p.format(id="x")).parent.is_dir() for p in CGROUP_DIRS)
        self._done = threading.Event()

    def stop(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        while not self._done.is_set():
            self.sample()
            self._done.wait(self.interval)

    def sample(self) -> None:
        import docker.errors

        try:
            containers = self.client.api.containers(filters={"label": LABEL_PROCESS})
        except docker.errors.DockerException:
            return
        at = time.monotonic()
        for c in containers:
            labels = c.get("Labels") or {}
            if labels.get(LABEL_PROCESS, "").split(":")[1:2] != [self.pid]:
                continue  # another process's lab (other users share this engine)
            path = cgroup_dir(c["Id"])
            if path is None and self.cgroups_here:
                continue  # removed since the listing (teardown)
            figures = read_cgroup(path) if path else self._from_stats(c["Id"])
            if figures is None:
                continue
            run = labels.get(LABEL_RUN, "?")
            lab = self.labs.setdefault(run, LabMemory(labels.get(LABEL_LAB, "?")))
            lab.add(at, c["Id"], *figures)

    def _from_stats(self, container_id: str) -> tuple[int, int | None] | None:
        """No cgroup directory visible here (another machine's engine): the engine's stats, slower."""
        import docker.errors

        self.missing_cgroups.add(container_id)
        try:
            mem = self.client.api.stats(container_id, stream=False).get("memory_stats") or {}
        except docker.errors.DockerException:
            return None
        stats = {k: int(v) for k, v in (mem.get("stats") or {}).items() if isinstance(v, int)}
        return resident_bytes(stats), mem.get("max_usage")


def available_memory() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, help="labs at once (testbed matrix --jobs; default: its own)")
    parser.add_argument("--mta", action="append", help="only these MTAs (testbed matrix --mta)")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between memory samples (default 0.5)")
    parser.add_argument("--compare", type=Path, help="a matrix.json from before: every cell's outcome must be the same")
    parser.add_argument("--out", type=Path, help="where the matrix writes (default: a temporary directory)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    use_venv()

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-matrix-"))
    subprocess.run(["make", "images"], cwd=REPO, capture_output=True, check=True)  # warm: images exist
    cmd = [str(REPO / ".venv/bin/testbed"), "matrix", "--out", str(out)]
    cmd += ["--jobs", str(args.jobs)] if args.jobs else []
    cmd += [a for m in args.mta or [] for a in ("--mta", m)]
    before = load()
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sampler = Sampler(proc.pid, args.interval)
    sampler.start()
    output, _ = proc.communicate()
    seconds = time.monotonic() - start
    sampler.stop()
    after = load()

    matrix = json.loads((out / "matrix.json").read_text()) if (out / "matrix.json").exists() else {"rows": []}
    rows = matrix["rows"]
    as_expected = bool(rows) and all(r["as_expected"] for r in rows)
    if proc.returncode != 0 and not rows:
        print(output[-3000:], file=sys.stderr)
    print(f"matrix: {len(rows)} labs in {seconds:.0f} s end to end, {matrix.get('elapsed_s', 0):.0f} s running labs "
          f"(rc {proc.returncode}; {before} before, {after} after)")
    print(f"every cell as expected: {'yes' if as_expected else 'NO'}")
    for r in rows:
        if not r["as_expected"]:
            print(f"  {r['scenario']}/{r['variant']} {r['assignment']}: {r['state']} ({r['expectations']}) {r['error'] or ''}")
    print(f"\nmemory per lab (sampled every {args.interval:g} s from each container's memory cgroup):")
    for line in memory_report(sampler.labs, available_memory()):
        print(line)
    if sampler.missing_cgroups:
        print(f"  ({len(sampler.missing_cgroups)} containers had no cgroup directory here; read from the engine's stats)")

    results: dict[str, object] = {
        "matrix_s": round(seconds, 1), "matrix_labs_s": matrix.get("elapsed_s"), "labs": len(rows),
        "as_expected": as_expected, "load_before": before, "load_after": after,
        "memory_mib": {run: {"scenario": lab.scenario, "containers": lab.containers,
                             "peak_resident": round(lab.peak_resident / MIB, 1),
                             "cgroup_peak": round(lab.cgroup_peak / MIB, 1)}
                       for run, lab in sampler.labs.items()},
    }
    ok = as_expected
    if args.compare:
        differences = compare_matrices(json.loads(args.compare.read_text())["rows"], rows)
        results["same_outcomes_as"] = str(args.compare)
        results["outcome_differences"] = differences
        ok &= not differences
        print(f"\noutcomes against {args.compare}: " + ("every cell the same" if not differences else "DIFFERENT"))
        for line in differences:
            print(f"  {line}")
    passed = seconds <= TARGET_S
    ok &= passed
    print(f"\ntarget check:\n  matrix_s: {seconds:.0f} s (target <= {TARGET_S:.0f} s) {'ok' if passed else 'MISSED'}")
    print(f"  matrix written to {out}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
