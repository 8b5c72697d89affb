#!/usr/bin/env python3
"""What packet capture costs: a reproduction run with and without it, alternately.

    python scripts/bench_capture.py                 # mx-routing, 3 pairs
    python scripts/bench_capture.py --pairs 5 --reproduction relay-bounce

Prints, per mode, the median wall time of `testbed reproduce NAME` and the
median phases of its labs (bring-up, where the sidecar starts beside the
hosts; collect, where the captures are stopped, copied and read), plus the
captures' size. The runs alternate so that a change in the machine's load
hits both modes alike; the load is printed with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def one_run(name: str, capture: bool, runs: Path) -> dict[str, float]:
    flag = "--capture" if capture else "--no-capture"
    before = set(runs.glob("*"))
    start = time.monotonic()
    proc = subprocess.run([*TESTBED, "reproduce", name, flag, "--runs", str(runs)], cwd=REPO,
                          capture_output=True, text=True)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"testbed reproduce {name} {flag} failed ({proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr}")
    results = [json.loads((d / "result.json").read_text()) for d in sorted(set(runs.glob("*")) - before)]
    size = sum(c["bytes"] for r in results for c in r.get("captures", []))
    out = {"wall_s": wall, "capture_bytes": float(size)}
    for phase in ("bring_up", "collect"):
        out[phase + "_s"] = max(r["timings_s"].get(phase, 0.0) for r in results)
    print(f"{'capture' if capture else 'no capture':>10}: {wall:5.1f} s wall, bring-up {out['bring_up_s']:.2f} s, "
          f"collect {out['collect_s']:.2f} s, {size} bytes captured  ({load()})", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reproduction", default="mx-routing")
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-capture-") as tmp:
        runs = Path(tmp)
        samples: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for _ in range(args.pairs):
            for capture in (False, True):
                samples[capture].append(one_run(args.reproduction, capture, runs))
    print(f"\nmedians over {args.pairs} runs each ({args.reproduction}, every variant side by side):")
    for key in ("wall_s", "bring_up_s", "collect_s"):
        off = statistics.median(s[key] for s in samples[False])
        on = statistics.median(s[key] for s in samples[True])
        print(f"  {key:<12} no capture {off:6.2f}   capture {on:6.2f}   difference {on - off:+6.2f}")


if __name__ == "__main__":
    main()
