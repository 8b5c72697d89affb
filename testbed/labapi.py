"""What the logic that drives a lab needs from it, and nothing more.

Scenario steps, the observers and the runner talk to a lab through these
protocols. ``fabric.Lab`` is the live one (Docker); the unit tests use a fake
that replays outputs recorded from real labs (``tests/unit/fakelab.py``).
Errors: a host that is not running raises ``HostDown``; anything else that
keeps a command from running raises ``LabError``. A command that ran and failed
is an ``ExecResult`` with its exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    from .adapters import RenderedFile
    from .capture import CaptureFile
    from .plan import IPNetwork, LabPlan


@dataclass(frozen=True)
class ExecResult:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class LiveLab(Protocol):
    """A running lab, as scenario steps and observers use it."""

    plan: LabPlan

    def exec(self, host: str, command: str, timeout: float = 60) -> ExecResult:
        """`sh -c command` in a host; raises HostDown if the host is not running."""
        ...

    def read_file(self, host: str, path: str) -> str:
        """A file's text ("" if it does not exist); HostDown, or LabError if it cannot be read."""
        ...

    def running(self, host: str) -> bool: ...

    def stop(self, host: str) -> None: ...

    def start(self, host: str) -> None:
        """Start a stopped host and return once it is ready again."""
        ...

    def check_cancel(self) -> None:
        """Raise LabError if the run was cancelled (Ctrl-C, SIGTERM)."""
        ...


class ManagedLab(LiveLab, Protocol):
    """A lab the runner brings up and tears down."""

    progress: Callable[[str], None]

    def create_networks(self, replan: Callable[[list[IPNetwork]], LabPlan]) -> None:
        """Create the networks (first), moving the plan to free subnets with ``replan`` if needed."""
        ...

    def up(self, files: dict[str, list[RenderedFile]], data_dirs: dict[str, tuple[str, ...]] | None = None) -> None:
        """Create and start every host on the networks; return when all are ready."""
        ...

    def start_capture(self) -> None:
        """Start capturing on every segment (after the networks exist); return once it captures."""
        ...

    def collect_captures(self, dest: Path) -> list[CaptureFile]:
        """Stop capturing; the captures are then in ``dest``/captures (none if it never started)."""
        ...

    def cancel(self) -> None: ...

    @property
    def cancelled(self) -> bool: ...

    def container_log(self, host: str, tail: int | str = "all") -> str: ...

    def teardown(self) -> tuple[int, int]: ...
