#!/usr/bin/env python3
"""Measure the client reproductions: warm wall times and the race sweep's timing accuracy.

    python scripts/bench_clients.py                  # both reproductions, warm, bookworm
    python scripts/bench_clients.py --suite trixie --rounds 2

Targets (checked here, never in tests): a warm `make reproduce-no-fallback` (both
variants) within 60 s; the warm race sweep (every client, every delay, both names,
i.e. the `race` variant of resolver-race) within 2 minutes. Accuracy: for every
step that used the Mac OS X 10.6 resolver MODEL, how much later than the
requested delay its AAAA answer arrived at the model (the DNS server's delay
error plus the network, as the model saw it): min / median / p99 / max, and
whether the model's verdict at each delay agrees with its rule given the A
answer's own arrival time. The machine's load is printed with every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TESTBED = REPO / ".venv" / "bin" / "testbed"
TARGETS = {"no-fallback": 60.0, "resolver-race/race": 120.0}
#: The model's default rule: AAAA awaited until 2 x max(N, 50 ms) after the queries went out.
FLOOR_MS = 50.0


def load() -> str:
    return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def run(args: list[str]) -> tuple[float, list[dict]]:
    start = time.monotonic()
    res = subprocess.run([str(TESTBED), *args, "--json"], cwd=REPO, capture_output=True, text=True)
    wall = time.monotonic() - start
    try:
        data = json.loads(res.stdout)
    except ValueError:
        sys.exit(f"`testbed {' '.join(args)}` printed no JSON (exit {res.returncode}):\n{res.stderr[-2000:]}")
    return wall, data if isinstance(data, list) else [data]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def model_accuracy(result: dict) -> tuple[list[float], list[str]]:
    """Per model step: AAAA lateness (ms) against the requested delay; and disagreements with the rule."""
    late: list[float] = []
    disagree: list[str] = []
    for sid, client in result["clients"].items():
        model = (client.get("resolver") or {}).get("answer")
        delay = client.get("labels", {}).get("delay_ms")
        if not model or delay is None:
            continue
        queries = {q["type"]: q for q in model["queries"]}
        a, aaaa = queries.get("A"), queries.get("AAAA")
        if not a or not aaaa or a.get("answered") is None:
            continue
        n_ms = (a["answered"] - a["sent"]) * 1000
        deadline = 2 * max(n_ms, FLOOR_MS)
        if aaaa.get("answered") is not None:
            arrived = (aaaa["answered"] - aaaa["sent"]) * 1000
            late.append(arrived - float(delay))
            used = arrived <= deadline
        else:
            used = False  # the model stopped waiting before it came
        has_v6 = any(":" in x for x in model["addresses"])
        if used != has_v6:
            disagree.append(f"{sid}: A at {n_ms:.1f} ms, deadline {deadline:.1f} ms, AAAA used={has_v6}")
    return late, disagree


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--rounds", type=int, default=1)
    opts = parser.parse_args()
    ok = True
    print(f"warming up (images): {load()}")
    run(["run", "topologies/resolver-race.yaml", "--variant", "fixed", "--suite", opts.suite])
    for round_no in range(1, opts.rounds + 1):
        wall, results = run(["reproduce", "no-fallback", "--suite", opts.suite])
        passed = all(r["passed"] for r in results)
        phases = ", ".join(f"{r['variant']}: " + " ".join(f"{k} {v:.1f}" for k, v in r["timings_s"].items())
                           for r in results)
        mark = "ok" if wall <= TARGETS["no-fallback"] and passed else "MISSED"
        ok &= mark == "ok"
        print(f"[{round_no}] no-fallback (both variants): {wall:.1f} s, target {TARGETS['no-fallback']:.0f} s "
              f"{mark}; verdicts {'hold' if passed else 'DO NOT HOLD'}; {phases}; {load()}")
        wall, results = run(["run", "topologies/resolver-race.yaml", "--variant", "race", "--suite", opts.suite])
        result = results[0]
        steps = sum(1 for _ in result["clients"])
        mark = "ok" if wall <= TARGETS["resolver-race/race"] and result["passed"] else "MISSED"
        ok &= mark == "ok"
        print(f"[{round_no}] race sweep ({steps} client steps): {wall:.1f} s, target "
              f"{TARGETS['resolver-race/race']:.0f} s {mark}; verdicts {'hold' if result['passed'] else 'DO NOT HOLD'}; "
              f"{load()}")
        late, disagree = model_accuracy(result)
        if late:
            print(f"    model's AAAA later than requested (ms): min {min(late):.2f} median "
                  f"{statistics.median(late):.2f} p99 {percentile(late, 0.99):.2f} max {max(late):.2f} "
                  f"over {len(late)} answers")
        print(f"    model decisions against its rule: {len(disagree)} disagree" + "".join(f"\n      {d}" for d in disagree))
        ok &= not disagree
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
