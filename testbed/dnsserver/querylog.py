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
            # Flushed after every batch of whole lines, so a reader never sees
            # a partial line and nothing waits in a buffer.
            self._file = open(path, "a", encoding="utf-8")
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
            # Take everything queued and write it with one system call: fewer
            # wake-ups of this thread, less GIL contention with the senders.
            items = [self._q.get()]
            while True:
                try:
                    items.append(self._q.get_nowait())
                except queue.Empty:
                    break
            lines: list[str] = []
            stop = False
            for item in items:
                if item is _STOP:
                    stop = True
                elif isinstance(item, threading.Event):
                    self._write(lines)
                    lines = []
                    item.set()
                elif isinstance(item, dict):
                    if self.recent.maxlen:
                        self.recent.append(item)
                    try:
                        lines.append(json.dumps(item, separators=(", ", ": ")) + "\n")
                    except (ValueError, TypeError) as e:
                        print(f"testbed-dns: query log entry dropped: {e}", file=sys.stderr)
            self._write(lines)
            if stop:
                return

    def _write(self, lines: list[str]) -> None:
        if not lines or self._file is None:
            return
        try:
            self._file.write("".join(lines))
            self._file.flush()
        except (OSError, ValueError) as e:
            # A full disk must not take the DNS server down with it.
            print(f"testbed-dns: query log write failed: {e}", file=sys.stderr)
