"""Labs from several commands at once: safe subnet allocation, no cross-talk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Six commands started together, as six shells (or six students) would.
COMMANDS = [
    ("relay-bounce", "broken"), ("relay-bounce", "fixed"), ("relay-bounce", "broken"),
    ("mx-routing", "broken"), ("mx-routing", "fixed"), ("dns-servfail", None),
]


def lab_addresses(plan: dict) -> set[str]:
    return {a for h in plan["hosts"].values() for i in h["interfaces"] for a in (i["ipv4"], i["ipv6"]) if a}


def test_six_commands_at_once_each_get_their_own_subnets(docker_client, tmp_path) -> None:
    procs = []
    for i, (topology, variant) in enumerate(COMMANDS):
        runs = tmp_path / f"cmd{i}"
        argv = [sys.executable, "-m", "testbed.cli", "run", topology, "--runs", str(runs), "--json"]
        if variant:
            argv += ["--variant", variant]
        procs.append((runs, subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    outcomes = [(runs, proc.returncode, out, err) for runs, proc in procs for out, err in [proc.communicate(timeout=900)]]
    for runs, rc, out, err in outcomes:
        assert rc == 0, f"{runs.name}: exit {rc}\n{err[-3000:]}"
    for runs, *_ in outcomes:
        [run_dir] = runs.iterdir()
        plan = json.loads((run_dir / "plan.json").read_text())
        # No cross-talk: every DNS query this lab's server saw came from this lab's own hosts.
        clients = {json.loads(line)["client"] for line in (run_dir / "dns-queries.jsonl").read_text().splitlines()}
        assert clients and clients <= lab_addresses(plan), f"{run_dir.name}: queries from {clients - lab_addresses(plan)}"
