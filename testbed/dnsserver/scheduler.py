"""Send delayed replies at the right moment, from one thread.

Delays could be done with a sleeping thread per query, but with hundreds in
flight the wake-ups contend for the GIL and threads come and go; a single
thread waiting on a heap of due times keeps the thread count fixed and wakes
exactly once per reply. Callbacks must be quick (a non-blocking send).
"""

from __future__ import annotations

import heapq
import itertools
import sys
import threading
import time
from collections.abc import Callable

# Condition.wait() can wake a little early or late; the last stretch before a
# due time is spent in short sleeps for sub-millisecond accuracy.
_SPIN_S = 0.0005


class Scheduler:
    def __init__(self, name: str = "dns-scheduler") -> None:
        self._heap: list[tuple[float, int, Callable[[], None], Callable[[], None] | None]] = []
        self._seq = itertools.count()          # tie-break: FIFO for equal due times
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def call_at(self, due: float, fn: Callable[[], None],
                on_cancel: Callable[[], None] | None = None) -> None:
        """Run ``fn`` at monotonic time ``due``; ``on_cancel`` runs instead if stopped first."""
        with self._cond:
            if self._stopping:
                if on_cancel:
                    on_cancel()
                return
            seq = next(self._seq)
            heapq.heappush(self._heap, (due, seq, fn, on_cancel))
            if self._heap[0][1] == seq:      # new earliest: re-arm the wait
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._heap)

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            cancelled = [c for _d, _s, _f, c in self._heap if c]
            self._heap.clear()
            self._cond.notify()
        for cancel in cancelled:
            _safe(cancel)
        self._thread.join(2)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if not self._heap:
                        self._cond.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _due, _seq, fn, _cancel = heapq.heappop(self._heap)
                        break
                    if wait > _SPIN_S:
                        self._cond.wait(wait - _SPIN_S)
                    else:
                        # Release the lock so call_at() is never held up.
                        self._cond.release()
                        try:
                            time.sleep(wait / 2)
                        finally:
                            self._cond.acquire()
            _safe(fn)


def _safe(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception as e:   # one failed send must not stop every later one
        print(f"testbed-dns: scheduled send failed: {type(e).__name__}: {e}",
              file=sys.stderr, flush=True)
