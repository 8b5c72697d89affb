"""Owner and process labels: which labs are the caller's, which are orphaned (no Docker)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from testbed.owner import LABEL_KEEP, LABEL_OWNER, LABEL_PROCESS, is_mine, lab_state, owner_labels, process_label


def test_a_lab_of_this_process_is_in_use_and_mine() -> None:
    labels = owner_labels(keep=False)
    assert lab_state(labels) == "in use" and is_mine(labels)
    assert labels[LABEL_PROCESS].startswith(f"{socket.gethostname()}:{os.getpid()}:")


def test_a_lab_whose_process_is_gone_is_orphaned() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    labels = {**owner_labels(keep=False), LABEL_PROCESS: process_label(child.pid)}
    assert lab_state(labels) == "in use"
    child.kill()
    child.wait()
    assert lab_state(labels) == "orphaned"


def test_a_reused_pid_does_not_make_a_lab_look_alive() -> None:
    machine, pid, _ = process_label().split(":")
    assert lab_state({LABEL_PROCESS: f"{machine}:{pid}:1", LABEL_KEEP: "false"}) == "orphaned"


def test_kept_labs_other_machines_and_unlabelled_labs() -> None:
    assert lab_state({**owner_labels(keep=True), LABEL_PROCESS: "x:1:1"}) == "kept"
    assert lab_state({LABEL_PROCESS: "another-machine:1:1"}) == "elsewhere"
    assert lab_state({}) == "orphaned"
    assert not is_mine({LABEL_OWNER: "someone-else"})


def test_testbed_session_narrows_my_labs_to_the_session(monkeypatch) -> None:
    from testbed.owner import LABEL_SESSION, current_owner, scope_labels

    monkeypatch.delenv("TESTBED_SESSION", raising=False)
    assert scope_labels() == [f"{LABEL_OWNER}={current_owner()}"] and scope_labels(everyone=True) == []
    assert is_mine({LABEL_OWNER: current_owner(), LABEL_SESSION: "anything"})
    monkeypatch.setenv("TESTBED_SESSION", "class-a")
    assert scope_labels() == [f"{LABEL_OWNER}={current_owner()}", f"{LABEL_SESSION}=class-a"]
    assert owner_labels(keep=False)[LABEL_SESSION] == "class-a"
    assert is_mine({LABEL_OWNER: current_owner(), LABEL_SESSION: "class-a"})
    assert not is_mine({LABEL_OWNER: current_owner(), LABEL_SESSION: ""})
