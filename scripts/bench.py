#!/usr/bin/env python3
"""Measure the issue targets: warm reproduction, no-op image build, cold set-up.

    python scripts/bench.py                 # warm runs + no-op build (images must exist or get built)
    python scripts/bench.py --cold          # also: fresh clone, no images, `make reproduce-mx-routing`

Targets (checked here, never in tests): warm `make reproduce-mx-routing` <= 30 s,
no-op image build <= 5 s, cold set-up from nothing <= 10 min. `--cold` deletes
every testbed/* image first.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = {"warm_reproduce_mx_routing_s": 30.0, "noop_image_build_s": 5.0, "cold_setup_s": 600.0}


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    return time.monotonic() - start, proc.returncode, proc.stdout + proc.stderr


def remove_images() -> None:
    out = subprocess.run(["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"], capture_output=True, text=True)
    tags = [t for t in out.stdout.split() if t.startswith("testbed/")]
    if tags:
        subprocess.run(["docker", "rmi", "-f", *tags], capture_output=True)
    subprocess.run(["docker", "image", "prune", "-f"], capture_output=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warm", type=int, default=3, help="warm reproductions to time (default 3)")
    parser.add_argument("--cold", action="store_true", help="also time a cold set-up (deletes testbed images)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()
    results: dict[str, object] = {}

    if args.cold:
        remove_images()
        with tempfile.TemporaryDirectory() as tmp:
            clone = Path(tmp) / "testbed"
            subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
            seconds, rc, output = timed(["make", "reproduce-mx-routing"], clone)
            results["cold_setup_s"] = round(seconds, 1)
            results["cold_setup_rc"] = rc
            if rc != 0:
                print(output[-3000:], file=sys.stderr)
            shutil.rmtree(clone / ".venv", ignore_errors=True)
        print(f"cold set-up (clone, venv, images, both variants): {seconds:.1f} s (rc {rc})")

    subprocess.run(["make", "venv", "images"], cwd=REPO, capture_output=True, check=True)
    seconds, rc, _ = timed([str(REPO / ".venv/bin/testbed"), "images", "--build"], REPO)
    results["noop_image_build_s"] = round(seconds, 2)
    print(f"no-op image build (`testbed images --build`): {seconds:.2f} s")

    warm = []
    for i in range(args.warm):
        seconds, rc, output = timed(["make", "reproduce-mx-routing"], REPO)
        warm.append(round(seconds, 1))
        print(f"warm `make reproduce-mx-routing` #{i + 1}: {seconds:.1f} s (rc {rc})")
        if rc != 0:
            print(output[-3000:], file=sys.stderr)
    if warm:
        results["warm_reproduce_mx_routing_runs_s"] = warm
        results["warm_reproduce_mx_routing_s"] = statistics.median(warm)

    print("\ntarget check:")
    ok = True
    for key, limit in TARGETS.items():
        if key in results:
            value = float(results[key])  # type: ignore[arg-type]
            passed = value <= limit
            ok &= passed
            print(f"  {key}: {value:.1f} s (target <= {limit:.0f} s) {'ok' if passed else 'MISSED'}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
