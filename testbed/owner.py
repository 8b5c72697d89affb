"""Whose lab is it, and is the process that made it still there?

Several users, shells, a classroom or pytest-xdist share one engine, so every
Docker object of a lab carries its owner and the process that created it.
`testbed down --all` removes only the caller's labs, and `testbed ps` tells a
lab whose process is gone (SIGKILL, a closed terminal) from one still in use
or kept on purpose.
"""

from __future__ import annotations

import getpass
import os
import socket
from collections.abc import Mapping
from pathlib import Path

LABEL_OWNER = "testbed.owner"  # user name
LABEL_PROCESS = "testbed.process"  # machine:pid:start time (pids are reused; the start time is not)
LABEL_KEEP = "testbed.keep"  # "true": kept on purpose (--keep, testbed up), not an orphan
LABEL_SESSION = "testbed.session"  # TESTBED_SESSION, when set: a narrower scope than the user
SESSION_ENV = "TESTBED_SESSION"


def current_owner() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its last ")".
    return stat.rsplit(")", 1)[1].split()[19]


def process_label(pid: int | None = None) -> str:
    pid = pid or os.getpid()
    return f"{socket.gethostname()}:{pid}:{_start_time(pid) or '?'}"


def current_session() -> str:
    """TESTBED_SESSION, or "" (a test suite, a CI job or a classroom sets it to keep its labs apart)."""
    return os.environ.get(SESSION_ENV, "")


def owner_labels(keep: bool) -> dict[str, str]:
    """The labels every object of a lab made by this process gets."""
    return {LABEL_OWNER: current_owner(), LABEL_SESSION: current_session(), LABEL_PROCESS: process_label(),
            LABEL_KEEP: "true" if keep else "false"}


def scope_labels(everyone: bool = False) -> list[str]:
    """Docker label filters for "my labs": this user's, and this session's when TESTBED_SESSION is set."""
    if everyone:
        return []
    scope = [f"{LABEL_OWNER}={current_owner()}"]
    if current_session():
        scope.append(f"{LABEL_SESSION}={current_session()}")
    return scope


def lab_state(labels: Mapping[str, str]) -> str:
    """``in use`` (its process runs), ``kept``, ``orphaned`` (process gone), or ``elsewhere`` (another machine)."""
    if labels.get(LABEL_KEEP) == "true":
        return "kept"
    machine, _, rest = labels.get(LABEL_PROCESS, "").partition(":")
    pid, _, started = rest.partition(":")
    if not machine or not pid.isdigit():
        return "orphaned"  # made before these labels existed, or by hand
    if machine != socket.gethostname():
        return "elsewhere"
    return "in use" if _start_time(int(pid)) == started else "orphaned"


def is_mine(labels: Mapping[str, str]) -> bool:
    """Within the caller's scope (see ``scope_labels``)."""
    if labels.get(LABEL_OWNER) != current_owner():
        return False
    return not current_session() or labels.get(LABEL_SESSION) == current_session()
