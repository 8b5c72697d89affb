"""`testbed check`: an exercise's checks judged against a live lab (through labapi.LiveLab).

Each check runs its steps in the lab (a fresh message per check run: its
Message-ID carries a tag of its own, so an earlier run's message is never
mistaken for it), collects the lab's evidence into its own directory under
the lab's run directory (``checks/<time>/<check>/``) and judges its
expectations with the verdict the reproductions use; a probe runs one
command in a host. Waiting is the steps' own (settle waits for quiet queues),
never a fixed sleep. A step that cannot be carried out fails its check with
the reason; the other checks still run.
"""

from __future__ import annotations

import dataclasses
import secrets
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import TestbedError
from .exercise import CheckSpec, ConnectProbe, Exercise, LookupProbe
from .labapi import LiveLab
from .plan import LabPlan
from .rundir import RunDir


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    message: str  # the check's pass or fail text
    hint: str | None  # on failure
    evidence: list[str] = field(default_factory=list)  # what the lab showed, one line per expectation or probe
    directory: str | None = None  # where its evidence is (steps, logs, timeline)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def run_checks(lab: LiveLab, exercise: Exercise, root: Path, progress: Callable[[str], None] = lambda _: None,
               only: list[str] | None = None) -> list[CheckOutcome]:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    tag = f"{lab.plan.run_id}-{secrets.token_hex(2)}"
    out = []
    for check in exercise.spec.checks:
        if only and check.name not in only:
            continue
        progress(f"check {check.name}")
        directory = RunDir(root / "checks" / f"{stamp}-{tag}" / check.name)
        directory.path.mkdir(parents=True, exist_ok=True)
        try:
            passed, evidence = _judge(lab, exercise, check, directory, tag)
        except TestbedError as exc:
            passed, evidence = False, [f"could not be carried out: {exc}"]
        out.append(CheckOutcome(check.name, passed, check.pass_ if passed else check.fail,
                                None if passed else check.hint, evidence, str(directory.path)))
    return out


def _judge(lab: LiveLab, exercise: Exercise, check: CheckSpec, directory: RunDir, tag: str) -> tuple[bool, list[str]]:
    evidence: list[str] = []
    passed = True
    if check.probe is not None:
        ok, line = _probe(lab, check.probe.connect or check.probe.lookup)
        passed &= ok
        evidence.append(line)
    if check.expect or check.steps:
        from .runner import run_in_live_lab
        from .verdict import evaluate

        plan, obs = run_in_live_lab(lab, exercise.check_topology(check), directory, message_tag=tag)
        for c in evaluate(plan, obs):
            if c.status == "n/a":
                continue
            passed &= c.status == "pass"
            evidence.append(f"{'ok' if c.status == 'pass' else 'NOT'}: {c.description}" + (f" [{c.detail}]" if c.detail else ""))
    return passed, evidence


def _address(plan: LabPlan, host: str, family: str) -> str | None:
    addresses = plan.hosts[host].addresses(family)
    return str(addresses[0]) if addresses else None


def probe_command(plan: LabPlan, probe: ConnectProbe | LookupProbe) -> str | None:
    """The shell command a probe runs in its host (None: the target has no address of that family)."""
    if isinstance(probe, ConnectProbe):
        address = _address(plan, probe.to, probe.family)
        return None if address is None else f"nc -z -w 3 {shlex.quote(address)} {probe.port}"
    return f"dig +short +time=2 +tries=2 {probe.type} {shlex.quote(probe.name)}"


def _probe(lab: LiveLab, probe: ConnectProbe | LookupProbe) -> tuple[bool, str]:
    command = probe_command(lab.plan, probe)
    if isinstance(probe, ConnectProbe):
        word = "IPv6" if probe.family == "ipv6" else "IPv4"
        if command is None:
            return not probe.succeeds, f"{probe.to} has no {word} address"
        made = lab.exec(probe.from_, command, timeout=15).ok
        what = f"{probe.from_} -> {probe.to} port {probe.port} over {word}: {'connected' if made else 'no connection'}"
        return made == probe.succeeds, what
    res = lab.exec(probe.from_, command, timeout=15)
    answers = [line.strip().rstrip(".") for line in res.stdout.splitlines() if line.strip()]
    shown = ", ".join(answers) or "no answer"
    what = f"{probe.from_} looked up {probe.name} {probe.type}: {shown}"
    if probe.empty:
        return not answers, what
    wanted = [a.rstrip(".") for a in probe.answers]
    # An MX answer is "10 mx10.brainbird.nl": the wanted name is its last word.
    return bool(answers) and all(any(w in (a, a.split()[-1]) for a in answers) for w in wanted), what
