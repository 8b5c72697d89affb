"""The build scheduler: parents first, siblings at once, failures and Ctrl-C stop the rest."""

from __future__ import annotations

import threading

import pytest

from testbed.buildgraph import Cancelled, JobsFailed, run_graph

# debian -> base -> four children, like images/
TREE = {"debian": None, "base": "debian", "dns": "base", "postfix": "base", "client": "base", "dovecot": "base"}
CHILDREN = ("client", "dns", "dovecot", "postfix")
# A safety net so a broken scheduler fails the test instead of hanging it; never a speed check.
HANG_GUARD_S = 30


class Recorder:
    """A job that records what ran, where, and which names had finished when each started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: dict[str, set[str]] = {}
        self.finished: set[str] = set()
        self.threads: dict[str, str] = {}

    def start(self, name: str) -> None:
        with self.lock:
            self.started[name] = set(self.finished)
            self.threads[name] = threading.current_thread().name

    def finish(self, name: str) -> str:
        with self.lock:
            self.finished.add(name)
        return f"id-{name}"


def test_parents_first_and_every_result_returned() -> None:
    rec = Recorder()

    def job(name: str, stop: threading.Event) -> str:
        rec.start(name)
        return rec.finish(name)

    ids = run_graph(TREE, job)
    assert ids == {n: f"id-{n}" for n in TREE}
    for name, parent in TREE.items():
        if parent:
            assert parent in rec.started[name]


def test_siblings_build_at_once() -> None:
    # Every child waits for all four to have started: only possible if they run together.
    barrier = threading.Barrier(len(CHILDREN), timeout=HANG_GUARD_S)

    def job(name: str, stop: threading.Event) -> str:
        if name in CHILDREN:
            barrier.wait()
        return name

    assert set(run_graph(TREE, job, workers=4)) == set(TREE)


def test_a_lone_job_runs_in_the_calling_thread() -> None:
    # The root (debootstrap) must get Ctrl-C itself; so must a chain of single images.
    rec = Recorder()

    def job(name: str, stop: threading.Event) -> str:
        rec.start(name)
        return rec.finish(name)

    run_graph(TREE, job)
    main = threading.current_thread().name
    assert rec.threads["debian"] == main and rec.threads["base"] == main
    assert all(rec.threads[c] != main for c in CHILDREN)


def test_one_worker_builds_one_after_another() -> None:
    active = []
    lock = threading.Lock()
    peak = []

    def job(name: str, stop: threading.Event) -> str:
        with lock:
            active.append(name)
            peak.append(len(active))
        with lock:
            active.remove(name)
        return name

    run_graph(TREE, job, workers=1)
    assert max(peak) == 1


def test_a_failure_stops_the_siblings_and_every_failure_is_reported() -> None:
    started = threading.Barrier(len(CHILDREN), timeout=HANG_GUARD_S)

    def job(name: str, stop: threading.Event) -> str:
        if name not in CHILDREN:
            return name
        started.wait()
        if name in ("dns", "postfix"):
            raise RuntimeError(f"{name} broke")
        # The others keep "building" until told to stop.
        if not stop.wait(HANG_GUARD_S):
            raise AssertionError("never told to stop")
        raise Cancelled(name)

    with pytest.raises(JobsFailed) as caught:
        run_graph(TREE, job, workers=4)
    assert sorted(caught.value.failures) == ["dns", "postfix"]
    assert sorted(caught.value.not_run) == ["client", "dovecot"]


def test_a_failed_parent_leaves_its_children_unstarted() -> None:
    ran = []

    def job(name: str, stop: threading.Event) -> str:
        ran.append(name)
        if name == "base":
            raise RuntimeError("base broke")
        return name

    with pytest.raises(JobsFailed) as caught:
        run_graph(TREE, job)
    assert ran == ["debian", "base"]
    assert sorted(caught.value.not_run) == sorted(CHILDREN)


def test_ctrl_c_in_a_lone_job_propagates_at_once() -> None:
    def job(name: str, stop: threading.Event) -> str:
        if name == "base":
            raise KeyboardInterrupt
        return name

    with pytest.raises(KeyboardInterrupt):
        run_graph(TREE, job)


def test_ctrl_c_waits_for_running_siblings_to_stop() -> None:
    # Ctrl-C reaches the main thread while the children build in the pool: stand in
    # for it with a child that raises KeyboardInterrupt, which the scheduler re-raises.
    started = threading.Barrier(len(CHILDREN), timeout=HANG_GUARD_S)
    stopped: list[str] = []
    lock = threading.Lock()

    def job(name: str, stop: threading.Event) -> str:
        if name not in CHILDREN:
            return name
        started.wait()
        if name == "dns":
            raise KeyboardInterrupt
        if not stop.wait(HANG_GUARD_S):
            raise AssertionError("never told to stop")
        with lock:
            stopped.append(name)
        raise Cancelled(name)

    with pytest.raises(KeyboardInterrupt):
        run_graph(TREE, job, workers=4)
    # Every other running build had let go before run_graph returned.
    assert sorted(stopped) == ["client", "dovecot", "postfix"]


def test_a_parent_outside_the_mapping_counts_as_present() -> None:
    assert run_graph({"dns": "base", "postfix": "base"}, lambda n, s: n) == {"dns": "dns", "postfix": "postfix"}
