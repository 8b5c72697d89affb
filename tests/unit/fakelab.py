"""A lab without Docker: replays outputs recorded from real labs (tests/data).

``FakeLab`` implements ``testbed.labapi.ManagedLab``. Each host has a
directory standing in for its filesystem, and replies for the commands the
test expects: ``reply(host, fragment, *outputs)`` stands in for ``fragment``
(an adapter's queue or flush command) wherever a command contains it, and
``answer`` for a whole command (a mailbox dump, swaks, a version query);
each use prints the next output (the last one repeats). An output may be a
callable, run when the command is (a flush that makes the MTA log a retry).

The rest of each command runs in a real ``sh`` with the host's absolute
paths (/etc, /var, /run) mapped into its directory and a PATH holding only
cat, head, tail and wc, so the shell around the adapters' commands (settle's
probe, ``tail -c +N``, ``[ -e ]``) is exercised as written and no real MTA
on the test machine is ever run. A command nothing answers fails with 127.
"""

from __future__ import annotations

import itertools
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from testbed.adapters import RenderedFile
from testbed.capture import CaptureFile, segment_captures
from testbed.errors import HostDown, LabError
from testbed.labapi import ExecResult
from testbed.plan import LabPlan

Output = str | Callable[[], str]

_PATH = re.compile(r"(?<![\w.$/-])/(?:etc|var|run)/[^\s;|&)<>'\"]*")
_TOOLS = ("cat", "head", "tail", "wc", "sleep")


class _Reply:
    def __init__(self, fragment: str, outputs: tuple[Output, ...], rc: int, whole: bool):
        self.fragment, self.outputs, self.rc, self.whole, self.used = fragment, list(outputs), rc, whole, 0

    def next(self) -> str:
        out = self.outputs[min(self.used, len(self.outputs) - 1)]
        self.used += 1
        return out() if callable(out) else out


class FakeLab:
    def __init__(self, plan: LabPlan, root: Path):
        self.plan = plan
        self.root = root
        self.progress: Callable[[str], None] = lambda _message: None
        self.calls: list[tuple[str, str]] = []
        self.down: set[str] = set()
        self.events: list[str] = []  # up, stop HOST, start HOST, teardown
        self._replies: dict[str, list[_Reply]] = {}
        self._failing: dict[str, list[tuple[str, ExecResult]]] = {}
        self._cancelled = False
        #: Recorded pcaps by segment, handed out by collect_captures.
        self.captures: dict[str, bytes] = {}
        self._seq = itertools.count()
        self._bin = root / ".bin"
        self._bin.mkdir(parents=True, exist_ok=True)
        for tool in _TOOLS:
            if not (self._bin / tool).exists():
                (self._bin / tool).symlink_to(shutil.which(tool) or f"/bin/{tool}")

    # --- setting the stage ------------------------------------------------------------

    def local(self, host: str, path: str) -> Path:
        return self.root / host / path.lstrip("/")

    def put(self, host: str, path: str, text: str) -> None:
        target = self.local(host, path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def append(self, host: str, path: str, text: str) -> None:
        with self.local(host, path).open("a") as fh:
            fh.write(text)

    def reply(self, host: str, fragment: str, *outputs: Output, rc: int = 0) -> None:
        """``fragment`` (an adapter's command inside a larger shell command) prints the next output."""
        self._replies.setdefault(host, []).insert(0, _Reply(fragment, outputs or ("",), rc, whole=False))

    def answer(self, host: str, fragment: str, *outputs: Output, rc: int = 0) -> None:
        """A whole command containing ``fragment`` (a mailbox dump, swaks) prints the next output."""
        self._replies.setdefault(host, []).insert(0, _Reply(fragment, outputs or ("",), rc, whole=True))

    def exec_fails(self, host: str, fragment: str, rc: int, stderr: str = "") -> None:
        """Commands with ``fragment`` never run: the exec itself fails (a timeout under load)."""
        self._failing.setdefault(host, []).insert(0, (fragment, ExecResult(rc, "", stderr)))

    def commands(self, host: str) -> list[str]:
        return [c for h, c in self.calls if h == host]

    # --- LiveLab ------------------------------------------------------------------------

    def exec(self, host: str, command: str, timeout: float = 60) -> ExecResult:
        self.calls.append((host, command))
        if not self.running(host):
            raise HostDown(host, "fake lab: stopped")
        failed = next((res for fragment, res in self._failing.get(host, []) if fragment in command), None)
        if failed is not None:
            return failed
        script = command
        for r in self._replies.get(host, []):
            if r.fragment in script:
                out = self.root / ".replies" / str(next(self._seq))
                out.parent.mkdir(exist_ok=True)
                out.write_text(r.next())
                replay = f'{{ cat "$TB_REPLIES/{out.name}"; (exit {r.rc}); }}'
                script = replay if r.whole else script.replace(r.fragment, replay)
                if r.whole:
                    break
        script = _PATH.sub(lambda m: str(self.local(host, m.group(0))), script)
        env = {"PATH": str(self._bin), "TB_REPLIES": str(self.root / ".replies"), "LC_ALL": "C"}
        try:
            proc = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=timeout,
                                  env=env, cwd=self.root, check=False)
        except subprocess.TimeoutExpired:
            return ExecResult(124, "", "fake lab: timed out")
        return ExecResult(proc.returncode, proc.stdout, proc.stderr)

    def read_file(self, host: str, path: str) -> str:
        if not self.running(host):
            raise HostDown(host, "fake lab: stopped")
        target = self.local(host, path)
        return target.read_text() if target.exists() else ""

    def running(self, host: str) -> bool:
        return host not in self.down

    def stop(self, host: str) -> None:
        self.events.append(f"stop {host}")
        self.down.add(host)

    def start(self, host: str) -> None:
        self.events.append(f"start {host}")
        self.down.discard(host)

    def check_cancel(self) -> None:
        if self._cancelled:
            raise LabError("bring-up cancelled")

    # --- ManagedLab ---------------------------------------------------------------------

    def create_networks(self, replan) -> None:
        self.events.append("networks")

    def up(self, files: dict[str, list[RenderedFile]], data_dirs: dict[str, tuple[str, ...]] | None = None) -> None:
        self.events.append("up")
        for host, rendered in files.items():
            for f in rendered:
                self.put(host, f.path, f.content)

    def start_capture(self) -> None:
        self.events.append("capture")

    def collect_captures(self, dest: Path) -> list[CaptureFile]:
        """The recorded captures (``self.captures``: segment -> pcap bytes) as the sidecar would leave them."""
        out = []
        for seg in segment_captures(self.plan):
            if seg.segment in self.captures:
                (dest / "captures").mkdir(parents=True, exist_ok=True)
                (dest / seg.file).write_bytes(self.captures[seg.segment])
                out.append(CaptureFile(seg.segment, seg.family, seg.file, len(self.captures[seg.segment])))
        return out

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def container_log(self, host: str, tail: int | str = "all") -> str:
        return "testbed: ready\n"

    def teardown(self) -> tuple[int, int]:
        self.events.append("teardown")
        return len(self.plan.hosts), len(self.plan.segments)


def split_before(text: str, marker: str) -> tuple[str, str]:
    """A recorded log cut before the first line with ``marker``: the part so far and the rest."""
    lines = text.splitlines(keepends=True)
    cut = next((i for i, line in enumerate(lines) if marker in line), len(lines))
    return "".join(lines[:cut]), "".join(lines[cut:])


