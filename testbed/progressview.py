"""Progress on long work: image builds, lab bring-up, scenario steps, the matrix (rich).

On a terminal, each piece of work is a live bar: an image build with the
Dockerfile step it runs ("3/16 RUN apt-get ..."), a lab's bring-up with its
containers up of total, its scenario step, the matrix's cells done of total
with the failures so far; every other message prints above the bars. Not a
terminal (CI logs, pipes) or ``TESTBED_PLAIN=1``: the same messages as plain
lines, one per status change, as before. The view writes to the console it is
given (stderr), so ``--json`` on stdout stays clean.

The messages it reads are the testbed's own (``fabric``, ``runner``,
``scenario``, ``images``); an unknown message is simply printed.
"""

from __future__ import annotations

import os
import re
import threading
from types import TracebackType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

_BRINGING_UP = re.compile(r"^bringing up (?P<n>\d+) containers")
_HOST_UP = re.compile(r"^(?P<host>\S+) up \(")
_STEP = re.compile(r"^step (?P<i>\d+)(?: of (?P<n>\d+))?: (?P<what>.*)$")
_BUILD_STEP = re.compile(r"^Step (?P<i>\d+)/(?P<n>\d+) : (?P<what>.*)$")
#: Image messages worth a line of their own when there is no live view (a build's own output is not).
_IMAGE_STATUS = ("building ", "built ", "build stopped", "importing ", "waiting ", "pulling ", "source: ")


class ProgressView:
    def __init__(self, console: Console, live: bool | None = None) -> None:
        self.console = console
        self.live = console.is_terminal and not os.environ.get("TESTBED_PLAIN") if live is None else live
        self._progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24),
                                  MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("[dim]{task.fields[note]}"),
                                  console=console, transient=False, disable=not self.live)
        self._tasks: dict[str, TaskID] = {}
        self._lock = threading.Lock()
        self._failures = 0

    def __enter__(self) -> ProgressView:
        if self.live:
            self._progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.live:
            self._progress.stop()

    def _line(self, label: str, message: str) -> None:
        self.console.print(f"[dim]{escape(label)}:[/] {escape(message)}", highlight=False)

    def _task(self, key: str, description: str, total: float | None) -> TaskID:
        with self._lock:
            if key not in self._tasks:
                self._tasks[key] = self._progress.add_task(description, total=total, note="")
            return self._tasks[key]

    # --- callbacks ------------------------------------------------------------------------

    def lab(self, label: str, message: str) -> None:
        """A lab's progress (runner, fabric, scenario)."""
        if not self.live:
            self._line(label, message)
            return
        if m := _BRINGING_UP.match(message):
            self._task(f"up:{label}", f"{label} bring-up", int(m["n"]))
        elif (m := _HOST_UP.match(message)) and f"up:{label}" in self._tasks:
            self._progress.update(self._tasks[f"up:{label}"], advance=1, note=f"{m['host']} ready")
        elif m := _STEP.match(message):
            task = self._task(f"steps:{label}", f"{label} scenario", None)
            self._progress.update(task, completed=int(m["i"]) - 1, note=f"step {m['i']}: {m['what'][:70]}")
        else:
            self._line(label, message)

    def image(self, label: str, message: str) -> None:
        """An image build's progress (``images.ensure_images``: status lines and the build's own output)."""
        if not self.live:
            if message.startswith(_IMAGE_STATUS) or "debootstrap" in message[:20]:
                self._line(label, message)
            return
        key = f"image:{label}"
        if message.startswith("building "):
            self._task(key, label, None)
            self._line(label, message)
        elif m := _BUILD_STEP.match(message):
            task = self._task(key, label, int(m["n"]))
            self._progress.update(task, total=int(m["n"]), completed=int(m["i"]) - 1, note=m["what"][:70])
        elif message.startswith(("built ", "build stopped")):
            if key in self._tasks:
                task = self._tasks[key]
                total = self._progress.tasks[task].total
                self._progress.update(task, total=total or 1, completed=total or 1, note=message)
            self._line(label, message)
        elif message.startswith(_IMAGE_STATUS) or "debootstrap" in message[:20]:
            self._line(label, message)

    def cell(self, done: int, total: int, line: str, as_expected: bool) -> None:
        """The matrix: one cell finished."""
        self._failures += 0 if as_expected else 1
        if self.live:
            task = self._task("matrix", "matrix cells", total)
            self._progress.update(task, completed=done, note=f"{self._failures} not as expected so far")
        self.console.print(line, highlight=False)
