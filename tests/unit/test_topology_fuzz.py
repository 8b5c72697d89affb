"""Fuzzing `testbed validate` and the stages after it with generated and special inputs (issue 9).

Each input runs in a worker process under a memory limit and a per-input
alarm; a worker that stops answering altogether is killed and the input it was
on counts as a hang. No assertion on speed: the time limits only detect hangs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import topology_fuzz

SEED = 20260909
GENERATED = 1000
PER_INPUT_S = 60  # a hang, not a slow input, on any machine
MEMORY_BYTES = 3 * 1024**3
WORKERS = 2


def _run(inputs: list[str], tmp_path: Path, index: int) -> list[dict]:
    """Run inputs in a worker; after a kill, go on after the input it hung on."""
    results: list[dict] = []
    todo = list(inputs)
    attempt = 0
    while todo:
        attempt += 1
        listing = tmp_path / f"inputs-{index}-{attempt}.txt"
        listing.write_text("\n".join(todo) + "\n")
        out = tmp_path / f"results-{index}-{attempt}.jsonl"
        proc = subprocess.Popen([sys.executable, topology_fuzz.__file__, str(listing), str(out),
                                 str(PER_INPUT_S), str(MEMORY_BYTES)])
        try:
            proc.wait(timeout=PER_INPUT_S * 3 + 30 * len(todo))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        done = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
        results += done
        todo = todo[len(done):]
        if todo and proc.returncode != 0:
            results.append({"input": todo[0], "exit": None,
                            "failures": [f"the worker died on it (exit {proc.returncode})"]})
            todo = todo[1:]
    return results


def test_validate_plan_render_dns_on_generated_topologies(tmp_path: Path) -> None:
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    inputs = topology_fuzz.generate(inputs_dir, GENERATED, SEED)
    assert sum(1 for p in inputs if "gen-" in p) == GENERATED
    from concurrent.futures import ThreadPoolExecutor

    shares = [inputs[i::WORKERS] for i in range(WORKERS)]
    with ThreadPoolExecutor(WORKERS) as pool:
        results = [r for part in pool.map(_run, shares, [tmp_path] * WORKERS, range(WORKERS)) for r in part]
    assert len(results) == len(inputs)
    accepted = sum(1 for r in results if r["exit"] == 0)
    rejected = sum(1 for r in results if r["exit"] == 2)
    failures = [f"{r['input']}: {f}" for r in results for f in r["failures"]]
    print(f"\nfuzz: {len(inputs)} inputs, {accepted} accepted, {rejected} rejected, {len(failures)} failures")
    assert not failures, "\n".join(failures[:40])
    # The generator must exercise both sides, or the test could not fail.
    assert accepted >= 100 and rejected >= 500
