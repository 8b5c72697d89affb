"""Every Docker object a run creates carries its label and is removed on every exit path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed import fabric
from testbed.plan import LABEL_RUN

REPO = Path(__file__).resolve().parents[2]


def run_ids(client) -> set[str]:
    return set(fabric.list_runs(client))


def made_by(labels: dict, pid: int) -> bool:
    from testbed.owner import LABEL_PROCESS

    return labels.get(LABEL_PROCESS, "").split(":")[1:2] == [str(pid)]


def start_run(docker_client, tmp_path) -> tuple[subprocess.Popen, set[str]]:
    """Start `testbed run relay-bounce` and wait until it has created a container."""
    before = run_ids(docker_client)
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "run", "relay-bounce", "--runs", str(tmp_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    new: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not new:
        time.sleep(0.2)
        containers = docker_client.api.containers(all=True, filters={"label": LABEL_RUN})
        # Only this child's runs: other processes may be running labs on the same engine.
        new = {c["Labels"][LABEL_RUN] for c in containers if made_by(c["Labels"], proc.pid)} - before
    assert new, "the run never created a container"
    return proc, new


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["ctrl-c", "sigterm", "sighup"])
def test_interrupted_run_removes_everything(docker_client, labs, tmp_path, signum) -> None:
    proc, new = start_run(docker_client, tmp_path)
    proc.send_signal(signum)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    for run_id in new:
        assert not docker_client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
        assert not docker_client.api.networks(filters={"label": f"{LABEL_RUN}={run_id}"})


def test_down_removes_a_kept_lab(docker_client, labs, tmp_path) -> None:
    before = run_ids(docker_client)
    res = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "run", "relay-bounce", "--keep", "--runs", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    [run_dir] = tmp_path.iterdir()
    kept = json.loads((run_dir / "result.json").read_text())["run_id"]
    assert kept in run_ids(docker_client) - before
    res = subprocess.run([sys.executable, "-m", "testbed.cli", "down", kept], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0 and "removed 8 container(s) and 2 network(s)" in res.stdout
    assert kept not in run_ids(docker_client)


def test_a_killed_run_is_orphaned_and_down_all_removes_only_the_callers_labs(docker_client, labs, tmp_path,
                                                                           monkeypatch) -> None:
    import secrets

    from testbed.owner import LABEL_OWNER

    # A session of its own: `down --all` must leave this test session's shared labs alone.
    monkeypatch.setenv("TESTBED_SESSION", "lifecycle-" + secrets.token_hex(4))
    proc, new = start_run(docker_client, tmp_path)
    proc.kill()  # SIGKILL: no cleanup runs
    proc.communicate(timeout=60)
    [run_id] = new
    ps = subprocess.run([sys.executable, "-m", "testbed.cli", "ps"], cwd=REPO, capture_output=True, text=True,
                        env={**os.environ, "COLUMNS": "200"})
    [row] = [line for line in ps.stdout.splitlines() if run_id in line]
    assert "orphaned" in row and "relay-bounce" in row
    # Another user's lab on the same engine: an object with someone else's owner label.
    other = docker_client.networks.create(f"testbed-other-{run_id}", labels={LABEL_RUN: f"other-{run_id}",
                                                                            LABEL_OWNER: "someone-else"})
    try:
        res = subprocess.run([sys.executable, "-m", "testbed.cli", "down", "--all"], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stdout + res.stderr
        assert "lab(s) of other users or sessions are left" in res.stdout
        assert run_id not in run_ids(docker_client)
        assert not docker_client.api.volumes(filters={"label": f"{LABEL_RUN}={run_id}"})["Volumes"]
        assert f"other-{run_id}" in run_ids(docker_client)
        shared = labs[("mx-routing", "broken")].plan.run_id  # this user's, another session's
        assert shared in run_ids(docker_client)
    finally:
        other.remove()


def test_run_directory_has_the_evidence(labs) -> None:
    run_dir = labs[("mx-routing", "broken")].result.run_dir.path
    for rel in ("result.json", "plan.json", "events.jsonl", "dns-queries.jsonl", "queues/final.json",
                "mailboxes.json", "logs/mx20/mail.log", "config/mx20/etc/postfix/main.cf", "sends/m1.txt",
                "config/bb-imap/etc/dovecot/dovecot.conf"):
        assert (run_dir / rel).is_file(), rel
    assert any(run_dir.glob("queues/step-*.json"))
