"""`testbed send`: an ad-hoc message in a live lab, followed like a scenario's (through labapi.LiveLab).

The message is one send step and a settle, run by the scenario runner on the
live lab with a Message-ID of its own; the lab's evidence is collected into
``sends/<time>-<id>/`` under the lab's run directory and the tracker follows
the message (and its bounce) across the hosts, as after a reproduction.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

import click
from pydantic import ValidationError

from .labapi import LiveLab
from .model import SendStep, SettleStep
from .model.hints import did_you_mean
from .plan import LabPlan
from .rundir import RunDir
from .track import History


def _default_via(plan: LabPlan, sender: str) -> str | None:
    """The sender's domain's submission relay, else its best MX, else the lab's first MTA."""
    domain = plan.topology.domains.get(sender.rpartition("@")[2])
    if domain is not None and domain.relay:
        return domain.relay
    if domain is not None and domain.mx:
        return min(domain.mx, key=lambda h: domain.mx[h])
    return next((h.name for h in plan.hosts.values() if h.kind == "mta"), None)


def send_step(plan: LabPlan, sender: str, recipients: list[str], via: str | None, client: str | None,
              subject: str | None) -> SendStep:
    """The send step, checked as a topology's would be (one clear error per bad option)."""
    via = via or _default_via(plan, sender)
    mtas = sorted(h.name for h in plan.hosts.values() if h.kind == "mta")
    if via not in mtas:
        raise click.BadParameter(f"{via!r} is not an MTA host of this lab{did_you_mean(str(via), mtas)}; "
                                 f"its MTAs: {', '.join(mtas)}", param_hint="--via")
    clients = sorted(h.name for h in plan.hosts.values() if h.kind == "client")
    if client is not None and client not in clients:
        raise click.BadParameter(f"{client!r} is not a client host of this lab{did_you_mean(client, clients)}; "
                                 f"its clients: {', '.join(clients) or 'none'}", param_hint="--client")
    if not clients:
        raise click.UsageError("this lab has no client host to send from")
    spec = {"id": f"send-{secrets.token_hex(2)}", "from": sender, "to": recipients, "via": via}
    if client:
        spec["client"] = client
    if subject:
        spec["subject"] = subject
    try:
        return SendStep.model_validate({"send": spec})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = {"sender": "--from", "to": "--to"}.get(str(first["loc"][-1] if first["loc"] else ""), "--from/--to")
        raise click.BadParameter(first["msg"].removeprefix("Value error, "), param_hint=where) from None


def follow_message(lab: LiveLab, step: SendStep, root: Path,
                   progress: Callable[[str], None] = lambda _: None) -> tuple[History, Path]:
    """Send it, wait until the lab's queues are quiet, and follow it; (its history, the evidence directory)."""
    from .runner import run_in_live_lab

    spec = step.send
    topology = lab.plan.topology.model_copy(update={"scenario": [step, SettleStep.model_validate({"settle": None})],
                                                    "expect": []})
    directory = RunDir(root / "sends" / f"{time.strftime('%Y%m%d-%H%M%S')}-{spec.id}")
    directory.path.mkdir(parents=True, exist_ok=True)
    # The step's id is random (send-1a2b), so the Message-ID <send-1a2b.RUN@client> is the message's own.
    _, obs = run_in_live_lab(lab, topology, directory, progress)
    return obs.histories[spec.id], directory.path
