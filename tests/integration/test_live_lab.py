"""Working in a live lab through the commands a student or an engineer types: up, ps, exec, logs, stop, start, down."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import labs_up, run_testbed

from testbed import fabric

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "mx-routing.yaml"


@pytest.fixture(scope="module")
def live(docker_client, tmp_path_factory):
    """One mx-routing lab brought up with `testbed up` (kept, with a time to live), removed after the module."""
    cwd = tmp_path_factory.mktemp("live")
    with labs_up(docker_client, cwd, str(TOPOLOGY), "--ttl", "2h") as labs:
        yield cwd, labs[0]


def test_up_prints_a_handle_and_keeps_the_lab(live, docker_client) -> None:
    cwd, lab = live
    assert lab["handle"].startswith("mx-routing-") and lab["topology"] == "mx-routing"
    assert lab["hosts"]["mx20"]["stack"] == "ipv6" and lab["hosts"]["mx20"]["addresses"]
    assert (Path(lab["run_dir"]) / "plan.json").is_file()
    ps = run_testbed("ps", "--json", cwd=cwd)
    row = next(r for r in json.loads(ps.stdout) if r["run_id"] == lab["run_id"])
    assert (row["handle"], row["state"]) == (lab["handle"], "kept")
    assert row["expires_in"].endswith("min") and row["containers"] == len(lab["hosts"])


def test_exec_runs_in_the_named_host_and_passes_its_exit_code(live) -> None:
    cwd, lab = live
    proc = run_testbed("exec", lab["handle"], "mx20", "--", "postconf", "-h", "inet_protocols", cwd=cwd)
    assert (proc.returncode, proc.stdout.strip()) == (0, "ipv6")
    proc = run_testbed("exec", lab["handle"], "relay", "exit 7", cwd=cwd)
    assert proc.returncode == 7
    proc = run_testbed("exec", lab["handle"], "mx2O", "--", "true", cwd=cwd)
    assert proc.returncode == 2 and "did you mean 'mx20'" in proc.stderr


def test_a_change_made_in_a_host_survives_its_stop_and_start(live) -> None:
    cwd, lab = live
    handle = lab["handle"]
    assert run_testbed("exec", handle, "mx20", "postconf -e bounce_queue_lifetime=1h && postfix reload",
                   cwd=cwd).returncode == 0
    assert run_testbed("stop", handle, "mx20", cwd=cwd).returncode == 0
    down = run_testbed("exec", handle, "mx20", "--", "true", cwd=cwd)
    assert down.returncode == 3 and "mx20" in down.stderr and "not running" in down.stderr
    assert run_testbed("start", handle, "mx20", cwd=cwd).returncode == 0
    proc = run_testbed("exec", handle, "mx20", "--", "postconf", "-h", "bounce_queue_lifetime", cwd=cwd)
    assert proc.stdout.strip() == "1h"
    assert run_testbed("exec", handle, "mx20", "postfix status", cwd=cwd).returncode == 0  # the MTA runs again


def test_logs_show_the_mtas_own_log(live) -> None:
    cwd, lab = live
    proc = run_testbed("logs", lab["handle"], "relay", "-n", "50", cwd=cwd)
    assert proc.returncode == 0 and "postfix/master" in proc.stdout and "daemon started" in proc.stdout


def test_send_follows_an_ad_hoc_message_across_the_lab(live) -> None:
    cwd, lab = live
    proc = run_testbed("send", lab["handle"], "--from", "user@skimbee.net", "--to", "user@brainbird.nl", "--json",
                       cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    history = json.loads(proc.stdout)
    assert history["state"] == "delivered" and history["path"][0] == "relay"  # the sender's domain's relay
    assert history["hops"][0]["family"] == "ipv4"  # the relay is IPv4-only
    assert (Path(history["directory"]) / "timeline.jsonl").is_file()
    bad = run_testbed("send", lab["handle"], "--from", "user@skimbee.net", "--to", "user@brainbird.nl",
                      "--via", "mx2O", cwd=cwd)
    assert bad.returncode == 2 and "did you mean 'mx20'" in bad.stderr


def test_an_unknown_lab_is_bad_input(live) -> None:
    cwd, lab = live
    proc = run_testbed("exec", lab["handle"] + "9", "relay", "--", "true", cwd=cwd)
    assert proc.returncode == 2 and "no lab called" in proc.stderr and "Traceback" not in proc.stderr


def test_down_by_handle_removes_the_lab(docker_client, tmp_path) -> None:
    with labs_up(docker_client, tmp_path, str(TOPOLOGY), "--variant", "fixed") as labs:
        gone = run_testbed("down", labs[0]["handle"], cwd=tmp_path)
        assert gone.returncode == 0 and f"removed {len(labs[0]['hosts'])} container(s)" in gone.stdout
        assert labs[0]["run_id"] not in fabric.list_runs(docker_client)
