"""The query log: one JSON object per line, one writer thread.

Lines are queued by the network threads and written, flushed per line, by a
single writer thread, so no network thread ever waits on the disk and lines
never interleave. A line is written when its reply leaves (or the query is
dropped), so lines are ordered by send time; ``t_ms`` is the receipt time.
"""

from __future__ import annotations

import json
import queue
import sys
import threading
from collections import deque
from datetime import datetime, timezone
from typing import Any, TextIO

_STOP = object()


def wall_clock(epoch: float) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2024-05-01T12:00:00.123Z."""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class QueryLog:
    """Thread-safe JSON Lines writer; ``path=None`` keeps entries in memory only."""

    def __init__(self, path: str | None = None, keep: int = 0) -> None:
        self._file: TextIO | None = None
        if path:
            # Line-buffered append: a crash loses at most the line being written.
            self._file = open(path, "a", encoding="utf-8", buffering=1)
        # Optional in-memory tail for in-process tests and the control channel.
        self.recent: deque[dict[str, Any]] = deque(maxlen=keep or None) if keep else deque(maxlen=0)
        self._q: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="dns-querylog", daemon=True)
        self._thread.start()

    def write(self, entry: dict[str, Any]) -> None:
        self._q.put(entry)

    def sync(self, timeout: float = 5.0) -> None:
        """Block until every entry queued so far is on disk (for tests)."""
        done = threading.Event()
        self._q.put(done)
        done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(_STOP)
            self._thread.join(5)
        if self._file:
            self._file.close()
            self._file = None

    def _run(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            if isinstance(item, threading.Event):
                item.set()
                continue
            assert isinstance(item, dict)
            if self.recent.maxlen:
                self.recent.append(item)
            if self._file is None:
                continue
            try:
                self._file.write(json.dumps(item, separators=(", ", ": ")) + "\n")
            except (OSError, ValueError, TypeError) as e:
                # A full disk must not take the DNS server down with it.
                print(f"testbed-dns: query log write failed: {e}", file=sys.stderr)
