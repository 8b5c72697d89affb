#!/usr/bin/env python3
"""Measure the issue targets: warm reproduction, no-op image build, cold set-up.

    python scripts/bench.py                 # warm runs + no-op build (images must exist or get built)
    python scripts/bench.py --cold          # also: fresh clone, no images, `make reproduce-mx-routing`
    python scripts/bench.py --cold --warm 0 --build-jobs 1 --build-jobs 4   # sequential vs parallel builds

Targets (checked here, never in tests): warm `make reproduce-mx-routing` <= 15 s,
no-op image build <= 5 s, cold set-up from nothing <= 2 min. Each warm run prints
its per-phase profile (bring-up, every scenario step, collect, teardown: the
result.json of each variant), and one reference run with the slow timing of
before (`SLOW_TIMING`, through `--set`) must conclude exactly what the warm runs
conclude: every message's path, state, handovers and bounces, and every
expectation's status (`results.outcome_signature`; not the family of a handover
between dual-stack hosts, which Postfix picks at random). A speed-up that changes an
outcome fails the benchmark. `--cold` builds under
its own image prefix (`--prefix`, default testbed-bench) and removes that prefix's
images before and after, so the testbed/* images others use on a shared engine are
never touched. The machine's load (uptime) is printed with every figure.

The side-by-side comparison with docker-compose is scripts/bench_compose.py; the
matrix's wall time and memory per lab are scripts/bench_matrix.py.
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
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TARGETS = {"warm_reproduce_mx_routing_s": 15.0, "noop_image_build_s": 5.0, "cold_setup_s": 120.0}
COLD_PREFIX = "testbed-bench"
#: The timing before the warm path was compressed: the reference run's outcome must not differ.
SLOW_TIMING = {"timing.connect_timeout": "2s", "timing.settle_quiet": "1s", "timing.settle_poll": "250ms"}


def load() -> str:
    """The load averages, printed with every figure: this machine is shared."""
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env)
    return time.monotonic() - start, proc.returncode, proc.stdout + proc.stderr


def remove_images(prefix: str) -> None:
    """Every image tagged under ``prefix/`` (never the shared testbed/* ones)."""
    if prefix == "testbed":
        raise SystemExit("refusing to remove the shared testbed/* images; use another --prefix")
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
    tags = [t for t in out.stdout.split() if t.startswith(f"{prefix}/")]
    if tags:
        subprocess.run(["docker", "rmi", *tags], capture_output=True)


def current_branch() -> str:
    return subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=REPO, capture_output=True,
                          text=True, check=True).stdout.strip()


def cold_setup(prefix: str, jobs: int | None) -> tuple[float, int]:
    """Fresh clone of this branch, no images under ``prefix``: `make reproduce-mx-routing`."""
    remove_images(prefix)
    env = {**os.environ, "TESTBED_IMAGE_PREFIX": prefix}
    if jobs is not None:
        env["TESTBED_BUILD_JOBS"] = str(jobs)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "testbed"
            subprocess.run(["git", "clone", "-q", "-b", current_branch(), str(REPO), str(clone)], check=True)
            seconds, rc, output = timed(["make", "reproduce-mx-routing"], clone, env)
            if rc != 0:
                print(output[-3000:], file=sys.stderr)
            shutil.rmtree(clone / ".venv", ignore_errors=True)
    finally:
        remove_images(prefix)
    return seconds, rc


def use_venv() -> None:
    """Continue in the project's virtualenv: the outcome check reads result.json with testbed's own code."""
    venv = REPO / ".venv"
    if Path(sys.prefix).resolve() != venv.resolve():
        subprocess.run(["make", "venv"], cwd=REPO, capture_output=True, check=True)
        python = venv / "bin/python"
        os.execv(python, [str(python), *sys.argv])


def reproduce(cmd: list[str]) -> tuple[float, int, str, dict[str, dict]]:
    """Run a reproduction with its run directories in a temporary place; their result.json by variant."""
    with tempfile.TemporaryDirectory(prefix="bench-runs-") as tmp:
        seconds, rc, output = timed(cmd, REPO, {**os.environ, "TESTBED_RUNS": tmp})
        runs = {}
        for path in sorted(Path(tmp).glob("*/result.json")):
            data = json.loads(path.read_text())
            runs[data["variant"]] = data
    return seconds, rc, output, runs


def profile(runs: dict[str, dict]) -> str:
    """Per variant: bring-up, each scenario step, collect and teardown (from result.json)."""
    lines = []
    for variant, result in runs.items():
        t = result.get("timings_s") or {}
        lines.append(f"  {variant}: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items())
                     + f" (sum {sum(t.values()):.1f} s)")
        for step in result.get("steps") or []:
            detail = step.get("detail") or {}
            polls = f", {detail['polls']} polls" if "polls" in detail else ""
            lines.append(f"      step {step['index'] + 1} {step['summary'][:60]}: {step['duration_s']:.2f} s{polls}")
    return "\n".join(lines)


def compare_runs(reference: dict[str, dict], other: dict[str, dict]) -> list[str]:
    """Per variant, where another run's outcome signature differs from the reference's."""
    from testbed.results import signature_differences

    out = []
    for variant in sorted(set(reference) | set(other)):
        if variant not in reference or variant not in other:
            out.append(f"{variant}: only in {'the reference' if variant in reference else 'this run'}")
            continue
        out += [f"{variant}: {d}" for d in signature_differences(reference[variant], other[variant])]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=3, help="warm reproductions to time (default 3)")
    parser.add_argument("--cold", action="store_true", help="also time a cold set-up (under --prefix)")
    parser.add_argument("--prefix", default=COLD_PREFIX, help=f"image prefix of the cold set-up (default {COLD_PREFIX})")
    parser.add_argument("--build-jobs", type=int, action="append",
                        help="TESTBED_BUILD_JOBS for the cold set-up; repeat to compare (default: the builder's)")
    parser.add_argument("--cold-only", action="store_true", help="skip the no-op build and warm runs")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--mta", help="every MTA of the warm and reference runs (make's MTA=)")
    parser.add_argument("--no-reference", action="store_true", help="skip the slow-timing reference run")
    args = parser.parse_args()
    use_venv()
    make_args = [f"MTA={args.mta}"] if args.mta else []
    from testbed.results import outcome_signature
    results: dict[str, object] = {}

    if args.cold:
        for jobs in args.build_jobs or [None]:
            before = load()
            seconds, rc = cold_setup(args.prefix, jobs)
            label = "default" if jobs is None else str(jobs)
            results[f"cold_setup_jobs_{label}_s"] = round(seconds, 1)
            results[f"cold_setup_jobs_{label}_rc"] = rc
            results["cold_setup_s"] = round(seconds, 1)  # the last --build-jobs given meets the target or not
            print(f"cold set-up (clone, venv, images, both variants), build jobs {label}: {seconds:.1f} s "
                  f"(rc {rc}; {before} before, {load()} after)", flush=True)

    if not args.cold_only:
        subprocess.run(["make", "venv", "images"], cwd=REPO, capture_output=True, check=True)
        seconds, rc, _ = timed([str(REPO / ".venv/bin/testbed"), "images", "--build"], REPO)
        results["noop_image_build_s"] = round(seconds, 2)
        print(f"no-op image build (`testbed images --build`): {seconds:.2f} s ({load()})")

    warm = []
    signatures: list[dict[str, dict]] = []
    for i in range(0 if args.cold_only else args.warm):
        seconds, rc, output, runs = reproduce(["make", "reproduce-mx-routing", *make_args])
        warm.append(round(seconds, 1))
        print(f"warm `make reproduce-mx-routing{''.join(' ' + a for a in make_args)}` #{i + 1}: "
              f"{seconds:.1f} s (rc {rc}; {load()})")
        if rc != 0:
            print(output[-3000:], file=sys.stderr)
        print(profile(runs))
        signatures.append({variant: outcome_signature(r) for variant, r in runs.items()})
    if warm:
        results["warm_reproduce_mx_routing_runs_s"] = warm
        results["warm_reproduce_mx_routing_s"] = statistics.median(warm)
    if signatures and not args.no_reference:
        sets = [a for key, value in SLOW_TIMING.items() for a in ("--set", f"{key}={value}")]
        cmd = [str(REPO / ".venv/bin/testbed"), "reproduce", "mx-routing", *sets,
               *(["--mta", args.mta] if args.mta else [])]
        seconds, rc, output, runs = reproduce(cmd)
        print(f"\nreference run with the slow timing ({', '.join(f'{k}={v}' for k, v in SLOW_TIMING.items())}): "
              f"{seconds:.1f} s (rc {rc}; {load()})")
        print(profile(runs))
        reference = {variant: outcome_signature(r) for variant, r in runs.items()}
        differences = [f"warm run #{i + 1}: {line}" for i, sig in enumerate(signatures)
                       for line in compare_runs(reference, sig)]
        results["same_outcome_as_slow_timing"] = not differences
        print("outcome check (paths, states, handovers, bounces, expectation statuses vs the slow run): "
              + ("identical" if not differences else "DIFFERENT"))
        for line in differences:
            print(f"  {line}")

    print("\ntarget check:")
    ok = True
    for key, limit in TARGETS.items():
        if key in results:
            value = float(results[key])  # type: ignore[arg-type]
            passed = value <= limit
            ok &= passed
            print(f"  {key}: {value:.1f} s (target <= {limit:.0f} s) {'ok' if passed else 'MISSED'}")
    if "same_outcome_as_slow_timing" in results:
        same = bool(results["same_outcome_as_slow_timing"])
        ok &= same
        print(f"  same outcome as the slow timing: {'ok' if same else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
