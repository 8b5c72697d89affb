"""Run jobs over a dependency tree, siblings at once: the image builder's scheduler (pure).

Why it looks like this:

* Images form a tree (debian -> base -> every service image), so once ``base``
  exists all its children can build side by side. ``graphlib.TopologicalSorter``
  hands out whatever is ready; a bounded pool runs it.
* A job that is ready alone (nothing else running) runs in the calling thread.
  The root (debootstrap) is always such a job, and its Ctrl-C clean-up (stop
  debootstrap, unmount, remove the rootfs) relies on the KeyboardInterrupt
  arriving in the thread that runs it; a single chain behaves as before.
* The first failure stops the rest: nothing new starts, running jobs see
  ``stop`` set and give up at their next chance, and every real failure is
  reported together. Ctrl-C does the same and waits for the running jobs to
  let go, so no job is left half-done behind the caller's back.
"""

from __future__ import annotations

import graphlib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

DEFAULT_WORKERS = 4
# How often the waiting loop wakes up: keeps Ctrl-C prompt on every platform.
_POLL_S = 0.5

Job = Callable[[str, threading.Event], str]
"""``job(name, stop)`` -> result; should return or raise ``Cancelled`` soon after ``stop`` is set."""


class Cancelled(Exception):  # noqa: N818 - a state, not an error
    """A job gave up because ``stop`` was set (another job failed, or Ctrl-C)."""


class JobsFailed(Exception):
    """One or more jobs failed; ``failures`` maps each name to its exception, in order."""

    def __init__(self, failures: Mapping[str, BaseException], not_run: list[str]) -> None:
        self.failures = dict(failures)
        self.not_run = list(not_run)
        super().__init__(", ".join(self.failures))


def _graph(parents: Mapping[str, str | None]) -> graphlib.TopologicalSorter[str]:
    graph: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in sorted(parents):
        parent = parents[name]
        graph.add(name, *([parent] if parent in parents else []))
    graph.prepare()
    return graph


class _Scheduler:
    """One run over the graph: hands out ready jobs, collects results and failures."""

    def __init__(self, parents: Mapping[str, str | None], job: Job, workers: int) -> None:
        self.graph = _graph(parents)
        self.names = list(parents)
        self.job = job
        self.stop = threading.Event()
        self.results: dict[str, str] = {}
        self.failures: dict[str, BaseException] = {}
        self.running: dict[Future[str], str] = {}
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="build")

    def run(self) -> dict[str, str]:
        try:
            while not self.stop.is_set() and (self.running or self.graph.is_active()):
                self._start_ready()
                if self.running:  # wait() on nothing would sleep the whole timeout
                    self._collect(wait(self.running, timeout=_POLL_S, return_when=FIRST_COMPLETED).done)
        except BaseException:  # Ctrl-C (or a bug): stop the others before it propagates
            self.stop.set()
            raise
        finally:
            self._drain()
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.failures:
            raise JobsFailed(self.failures, [n for n in self.names if n not in self.results and n not in self.failures])
        return self.results

    def _start_ready(self) -> None:
        ready = list(self.graph.get_ready())
        if len(ready) == 1 and not self.running:
            # Alone: run here, where Ctrl-C arrives (see the module docstring).
            self._finish(ready[0], self._run_inline(ready[0]))
            return
        for name in ready:
            self.running[self.pool.submit(self.job, name, self.stop)] = name

    def _run_inline(self, name: str) -> Future[str]:
        fut: Future[str] = Future()
        try:
            fut.set_result(self.job(name, self.stop))
        except Exception as exc:  # noqa: BLE001 - recorded like a pool job's failure
            fut.set_exception(exc)
        return fut

    def _collect(self, done: set[Future[str]]) -> None:
        for fut in done:
            self._finish(self.running.pop(fut), fut)

    def _finish(self, name: str, fut: Future[str]) -> None:
        exc = fut.exception()
        if exc is None:
            self.results[name] = fut.result()
            self.graph.done(name)
        elif not isinstance(exc, Cancelled):
            self.failures[name] = exc
            self.stop.set()
        if isinstance(exc, BaseException) and not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt raised inside a worker: the caller's to handle

    def _drain(self) -> None:
        """Wait for running jobs to let go (they were told to stop); keep their outcome."""
        while self.running:
            done, _ = wait(self.running, return_when=FIRST_COMPLETED)
            for fut in done:
                name = self.running.pop(fut)
                exc = fut.exception()
                if exc is None:
                    self.results[name] = fut.result()
                elif isinstance(exc, Exception) and not isinstance(exc, Cancelled):
                    self.failures[name] = exc


def run_graph(parents: Mapping[str, str | None], job: Job, workers: int = DEFAULT_WORKERS) -> dict[str, str]:
    """Run ``job`` for every name, each after its parent, up to ``workers`` at once.

    ``parents`` maps each name to its parent (None, or a name outside the mapping,
    for a root). Returns {name: result}. Raises ``JobsFailed`` naming every job
    that failed and the ones that never ran; KeyboardInterrupt propagates once the
    running jobs have stopped.
    """
    return _Scheduler(parents, job, workers).run()
