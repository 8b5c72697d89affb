"""Errors the user can act on.

Every stage reports problems as ``TestbedError`` (or a subclass); the CLI prints
them without a traceback. Problems found in a topology file are collected into
one ``TopologyError`` so the user fixes them all in one go.
"""

from __future__ import annotations

from dataclasses import dataclass


class TestbedError(Exception):
    """A problem the user can fix; printed as a message, never as a traceback."""

    __test__ = False  # not a pytest test class, despite the name


@dataclass(frozen=True)
class Problem:
    """One problem in an input file: where it is and what was expected."""

    file: str
    path: str
    message: str
    line: int | None = None
    #: The variant whose patched document shows the problem ("" = the file as written).
    variant: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        path = self.path or "(top level)"
        suffix = f" (variant {self.variant})" if self.variant else ""
        return f"{where}: {path}: {self.message}{suffix}"


class TopologyError(TestbedError):
    """All problems found while loading one topology, reported together."""

    def __init__(self, problems: list[Problem], subject: str = "topology"):
        self.problems = problems
        count = len(problems)
        head = f"{count} problem{'s' if count != 1 else ''} in {subject}"
        super().__init__(head + ":\n" + "\n".join(f"  {p}" for p in problems))


class InputError(TestbedError):
    """Bad input that is not a file's content (shards that do not fit together): exit code 2, like a topology's."""


class DockerUnavailable(TestbedError):
    """The Docker engine cannot be reached."""


class PreflightError(TestbedError):
    """The machine is not fit for a lab (address overlap, missing engine feature)."""


class LabError(TestbedError):
    """Something went wrong while running a lab (a container that did not come up)."""


class HostDown(LabError):
    """A command was meant for a host that is not running (a scenario step stopped it)."""

    def __init__(self, host: str, detail: str = ""):
        self.host = host
        super().__init__(f"{host} is not running" + (f" ({detail})" if detail else ""))


class NoSuchLab(InputError):
    """No live lab on the engine has the handle or run id the user gave (bad input, not a broken machine)."""


class CaptureFailed(LabError):
    """tcpdump would not capture: a bad --filter expression, most often (its own words say which)."""
