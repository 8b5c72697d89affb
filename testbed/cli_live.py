"""The commands that work in a live lab: up, exec, shell, logs, stop, start, capture, reset.

A lab is named by its handle (``mx-routing-1``, printed by `testbed up` and
`testbed ps`) or its run id. Every command here finds it through
``livelab.attach`` and then uses the same ``fabric.Lab`` the runner and the
scenario use.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
from concurrent.futures import ThreadPoolExecutor
import sys
import time
from pathlib import Path

import click
from rich.markup import escape

from .adapters import DnsAdapter, MtaAdapter, adapter_for
from . import resources
from .cli import EXIT_ENVIRONMENT, EXIT_FAILED, _common_topology_options, _guard, _mta_overrides, \
    _parse_sets, _topology_path, console, main, out
from .errors import CaptureFailed, LabError
from .model import did_you_mean, load_topology, variant_names
from .plan import LABEL_EXERCISE, LABEL_EXPIRES, LABEL_HANDLE, LabPlan
from .progressview import ProgressView
from .source import load_yaml


def exercise_named(name: str) -> Path | None:
    """An exercise directory or file, or the name of a shipped exercise -> its exercise.yaml (None: not one)."""
    path = Path(name)
    for candidate in (path / "exercise.yaml", path, resources.exercises_dir() / name / "exercise.yaml"):
        if candidate.name == "exercise.yaml" and candidate.is_file():
            return candidate
    return None


class _Ttl(click.ParamType):
    name = "TTL"

    def convert(self, value, param, ctx):  # noqa: ANN001 - click's signature
        from .livelab import parse_ttl

        try:
            return parse_ttl(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _host(plan: LabPlan, host: str) -> str:
    if host not in plan.hosts:
        raise click.BadParameter(f"lab {plan.labels.get(LABEL_HANDLE) or plan.run_id} has no host {host!r}"
                                 f"{did_you_mean(host, plan.hosts)}; its hosts: {', '.join(sorted(plan.hosts))}",
                                 param_hint="HOST")
    return host


def _attach(name: str):
    from . import fabric
    from .livelab import attach

    return attach(fabric.connect(), name)


def _summary(plan: LabPlan) -> dict[str, object]:
    expires = plan.labels.get(LABEL_EXPIRES)
    return {
        "handle": plan.labels.get(LABEL_HANDLE, ""),
        "run_id": plan.run_id,
        "topology": plan.name,
        "variant": plan.variant,
        "suite": plan.suite,
        "expires": float(expires) if expires else None,
        "hosts": {h.name: {"kind": h.kind, "software": h.software, "stack": h.stack, "container": h.container,
                           "addresses": [str(a) for a in h.addresses()]} for h in plan.hosts.values()},
        "segments": {s.name: {"family": s.family, "bridge": s.bridge,
                              "subnets": [str(n) for n in (s.lab_subnet("ipv4"), s.lab_subnet("ipv6")) if n]}
                     for s in plan.segments.values()},
    }


def _print_lab(plan: LabPlan, run_dir: Path) -> None:
    handle = plan.labels.get(LABEL_HANDLE, plan.run_id)
    expires = plan.labels.get(LABEL_EXPIRES)
    until = f", until {time.strftime('%H:%M', time.localtime(float(expires)))}" if expires else ""
    out.print(f"[bold]{handle}[/] is up: {plan.name}/{plan.variant} on {plan.suite}, run {plan.run_id}{until}")
    for h in sorted(plan.hosts.values(), key=lambda h: h.name):
        addresses = ", ".join(map(str, h.addresses()))
        out.print(f"  {h.name:<10} {h.kind:<9} {h.software:<12} {h.stack:<5} {addresses}", highlight=False)
    out.print(f"  run directory: {run_dir}", highlight=False)
    some = next((h.name for h in plan.hosts.values() if h.kind == "mta"), next(iter(plan.hosts)))
    out.print(f"  next: testbed shell {handle} {some} · testbed logs {handle} {some} · testbed exec {handle} "
              f"{some} -- CMD · testbed down {handle}", highlight=False)


@main.command()
@click.argument("topology")
@click.option("--variant", help="Variant to bring up (default: the file's base variant).")
@click.option("--count", type=click.IntRange(1, 40), default=1, show_default=True,
              help="Labs of this topology at once, each with its own subnets and handle (a classroom).")
@click.option("--ttl", type=_Ttl(), help="Remove the lab after this long (90m, 2h, 3d; at most 7d). Default: never.")
@click.option("--runs", type=click.Path(file_okay=False), help="Where run directories go (default ./runs).")
@click.option("--json", "as_json", is_flag=True, help="Print each lab's handle, hosts and addresses as JSON.")
@_common_topology_options
@_guard
def up(topology: str, variant: str | None, count: int, ttl: float | None, runs: str | None, as_json: bool,
       sets, mta, suite) -> None:
    """Bring a lab up and keep it running (no scenario): work in it with shell, exec, logs, down."""
    from . import fabric
    from .livelab import reap_expired
    from .runner import RunOptions, ensure_images_for, plan_runs, run_plans

    exercise_path = exercise_named(topology)
    if exercise_path is not None:
        from .exercise import load_exercise

        exercise = load_exercise(exercise_path)
        path, variant = exercise.topology_path, variant or exercise.spec.variant
        overrides = {**exercise.spec.set, **_mta_overrides(path, mta), **_parse_sets(sets)}
    else:
        path = _topology_path(topology)
        overrides = {**_mta_overrides(path, mta), **_parse_sets(sets)}
    names = variant_names(load_yaml(path).data)
    if variant is not None and variant not in names:
        raise click.BadParameter(f"{path.name} has no variant {variant!r}{did_you_mean(variant, names)}; "
                                 f"its variants: {', '.join(names)}", param_hint="--variant")
    topologies = [load_topology(path, variant or names[0], overrides) for _ in range(count)]
    client = fabric.connect()
    for gone in reap_expired(client):
        console.print(f"removed {gone}: its time to live had run out", highlight=False)
    plans = plan_runs(client, topologies, suite)
    for plan in plans:
        if ttl:
            plan.labels[LABEL_EXPIRES] = f"{time.time() + ttl:.0f}"
        if exercise_path is not None:  # `testbed check LAB` finds the exercise's checks here
            plan.labels[LABEL_EXERCISE] = str(exercise_path.resolve())
    with ProgressView(console) as view:
        images = ensure_images_for(plans, progress=view.image)
        options = RunOptions(keep=True, suite=suite, progress=view.lab, capture=False, scenario=False)
        if runs:
            options.runs_root = Path(runs)
        results = run_plans(client, plans, options, images)
    failed = [r for r in results if r.error]
    for r in failed:  # a lab that did not come up is of no use to anyone: remove it
        fabric.teardown(client, r.plan.run_id)
        console.print(f"{r.label}: could not be brought up: {r.error}", highlight=False, markup=False)
    good = [r for r in results if not r.error]
    if as_json:
        out.print_json(json.dumps([{**_summary(r.plan), "run_dir": str(r.run_dir.path.resolve())} for r in good]))
    else:
        for r in good:
            _print_lab(r.plan, r.run_dir.path)
    if failed:
        sys.exit(EXIT_ENVIRONMENT)


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("lab")
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=click.IntRange(1, 3600), default=300, show_default=True, help="Seconds it may take.")
@_guard
def exec_command(lab: str, host: str, command: tuple[str, ...], timeout: int) -> None:
    """Run a command in a lab host: testbed exec LAB HOST -- postconf -n"""
    _, live = _attach(lab)
    _host(live.plan, host)
    # One word is a shell command line as typed ("postqueue -p | tail -1"); several are argv.
    line = command[0] if len(command) == 1 else shlex.join(command)
    res = live.exec(host, line, timeout=timeout)
    sys.stdout.write(res.stdout)
    sys.stderr.write(res.stderr)
    sys.exit(res.rc)


@main.command()
@click.argument("lab")
@click.argument("host")
@_guard
def shell(lab: str, host: str) -> None:
    """An interactive shell in a lab host (bash; leave it with exit)."""
    _, live = _attach(lab)
    _host(live.plan, host)
    sys.exit(live.interactive(host, ["sh", "-c", "command -v bash >/dev/null && exec bash -l || exec sh -l"]))


def _log_path(plan: LabPlan, host: str) -> str | None:
    """The host's own log: an MTA's mail log, the DNS server's query log; None: the container's output."""
    adapter = adapter_for(plan.hosts[host].software)
    if isinstance(adapter, MtaAdapter):
        return adapter.mail_log
    if isinstance(adapter, DnsAdapter) and adapter.query_log:
        return adapter.query_log
    return None


@main.command()
@click.argument("lab")
@click.argument("host")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines (Ctrl-C stops).")
@click.option("--lines", "-n", type=click.IntRange(1), default=200, show_default=True, help="How many last lines.")
@_guard
def logs(lab: str, host: str, follow: bool, lines: int) -> None:
    """A lab host's log: the MTA's mail log, the DNS server's query log, or else the container's output."""
    _, live = _attach(lab)
    _host(live.plan, host)
    path = _log_path(live.plan, host)
    if path is None:
        if follow:
            raise click.UsageError(f"{host} has no log of its own to follow; without --follow: its container output")
        sys.stdout.write(live.container_log(host, tail=lines))
        return
    quoted = shlex.quote(path)
    if not follow:
        res = live.exec(host, f"if [ -e {quoted} ]; then tail -n {lines} {quoted}; fi")
        if not res.ok:
            raise LabError(f"cannot read {path} on {host}: {res.stderr.strip()}")
        sys.stdout.write(res.stdout)
        return
    try:
        for line in live.exec_stream(host, f"tail -n {lines} -F {quoted} 2>/dev/null"):
            print(line, flush=True)
    except KeyboardInterrupt:
        return  # the user stopped following; the lab is untouched


@main.command()
@click.argument("lab")
@click.argument("host")
@_guard
def stop(lab: str, host: str) -> None:
    """Stop a lab host at once, like a machine losing power (its files stay)."""
    _, live = _attach(lab)
    live.stop(_host(live.plan, host))
    out.print(f"{host} stopped", highlight=False)


@main.command()
@click.argument("lab")
@click.argument("host")
@_guard
def start(lab: str, host: str) -> None:
    """Start a stopped lab host again; returns once its service is ready (changes made in it are kept)."""
    _, live = _attach(lab)
    live.start(_host(live.plan, host))
    out.print(f"{host} is up again", highlight=False)


def _print_outcomes(handle: str, outcomes) -> None:  # noqa: ANN001 - checkrun.CheckOutcome
    for o in outcomes:
        mark = "[green]✓[/]" if o.passed else "[red]✗[/]"
        out.print(f"{mark} [bold]{o.name}[/]: {escape(o.message)}")
        for line in o.evidence:
            out.print(f"    {escape(line)}", style="dim")
        if o.hint:
            out.print(f"    [yellow]hint:[/] {escape(o.hint)}")
    good = sum(o.passed for o in outcomes)
    out.print(f"{handle}: {good}/{len(outcomes)} checks pass", highlight=False)


@main.command()
@click.argument("labs", nargs=-1, required=True)
@click.option("--exercise", "exercise_file", type=click.Path(exists=True),
              help="The exercise (directory or exercise.yaml) to check against (default: the one the lab was "
                   "brought up from).")
@click.option("--only", multiple=True, help="Only this check (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON (for grading scripts).")
@_guard
def check(labs: tuple[str, ...], exercise_file: str | None, only: tuple[str, ...], as_json: bool) -> None:
    """Judge live labs against an exercise's checks: pass and fail messages, hints; exit 0 only if all pass.

    Several LABS (a classroom) are checked side by side, with a summary. See docs/exercises.md.
    """
    from .checkrun import run_checks
    from .exercise import load_exercise

    jobs = []
    for name in labs:
        ref, live = _attach(name)
        path = Path(exercise_file) if exercise_file else None
        if path is None and ref.labels.get(LABEL_EXERCISE):
            path = Path(ref.labels[LABEL_EXERCISE])
        if path is None:
            raise click.UsageError(f"lab {name!r} was not brought up from an exercise; give --exercise FILE")
        exercise = load_exercise(exercise_named(str(path)) or path, topology=live.plan.topology)
        unknown = [o for o in only if o not in {c.name for c in exercise.spec.checks}]
        if unknown:
            raise click.BadParameter(f"{exercise.path} has no check {unknown[0]!r}; its checks: "
                                     f"{', '.join(c.name for c in exercise.spec.checks)}", param_hint="--only")
        jobs.append((ref.handle or ref.run_id, ref, live, exercise))
    # A classroom's labs are checked side by side: a check mostly waits for mail to settle.
    with ProgressView(console) as view, ThreadPoolExecutor(max_workers=min(4, len(jobs))) as pool:
        futures = [pool.submit(run_checks, live, exercise, ref.run_dir or Path("runs"),
                               lambda m, h=handle: view.lab(h, m), list(only) or None)
                   for handle, ref, live, exercise in jobs]
        report = [(handle, exercise, fut.result()) for (handle, _, _, exercise), fut in zip(jobs, futures)]
    if not as_json:
        for handle, _, outcomes in report:
            _print_outcomes(handle, outcomes)
    if as_json:
        out.print_json(json.dumps([{"lab": h, "exercise": str(e.path), "title": e.spec.title,
                                    "passed": all(o.passed for o in oc), "checks": [o.to_dict() for o in oc]}
                                   for h, e, oc in report]))
    elif len(report) > 1:
        done = sum(all(o.passed for o in oc) for _, _, oc in report)
        out.print(f"{done}/{len(report)} labs pass every check: "
                  + ", ".join(f"{h} {sum(o.passed for o in oc)}/{len(oc)}" for h, _, oc in report), highlight=False)
    sys.exit(0 if all(o.passed for _, _, oc in report for o in oc) else EXIT_FAILED)


def _segment(plan: LabPlan, segment: str) -> str:
    if segment not in plan.segments:
        raise click.BadParameter(f"lab {plan.labels.get(LABEL_HANDLE) or plan.run_id} has no segment {segment!r}"
                                 f"{did_you_mean(segment, plan.segments)}; its segments: "
                                 f"{', '.join(sorted(plan.segments))}", param_hint="SEGMENT")
    return segment


@main.command("capture")
@click.argument("lab")
@click.argument("segment")
@click.option("-w", "write", metavar="FILE", help="Write a pcap file (tshark -r FILE); '-': pcap bytes on stdout.")
@click.option("--filter", "bpf", metavar="BPF", help="Only packets this tcpdump filter also matches (ANDed with "
              "the lab's own: the capture never holds traffic from outside the lab).")
@click.option("--count", "-c", type=click.IntRange(1), help="Stop after this many packets.")
@_guard
def capture_command(lab: str, segment: str, write: str | None, bpf: str | None, count: int | None) -> None:
    """Capture a lab segment: tcpdump's lines as packets come, or a pcap (-w FILE, -w - for a pipe). Ctrl-C stops."""
    _, live = _attach(lab)
    _segment(live.plan, segment)
    pcap = write is not None
    if write == "-" and sys.stdout.isatty():
        raise click.UsageError("-w - writes pcap bytes to stdout, which is a terminal here; pipe it "
                               "(| tshark -r -) or give a file")
    # stdout stays open for Python's own last flush; a file is closed with the capture.
    sink = contextlib.nullcontext(sys.stdout.buffer) if write in (None, "-") else _open_pcap(write)

    def message(line: str) -> None:
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # tcpdump's lines whole

    try:
        with live.live_capture(segment, bpf, count, pcap, on_message=message) as running, sink as stream:
            _stream_until_stopped(running, stream)
    except CaptureFailed as exc:
        # tcpdump names the bridge when the interface is the trouble; anything else it could not
        # start on is the user's filter ("syntax error", "unknown port 'smtpp'").
        if bpf and live.plan.segments[segment].bridge not in str(exc):
            raise click.BadParameter(f"{bpf!r}: {exc}", param_hint="--filter") from None
        raise
    except BrokenPipeError:
        # The reader went away (`| head`, tshark done): the sidecar is gone already; keep Python's
        # final flush of stdout from failing too.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return
    except KeyboardInterrupt:  # a second Ctrl-C: stop waiting for tcpdump; the sidecar is removed
        console.print("capture interrupted", highlight=False)
        sys.exit(130)
    if write not in (None, "-"):
        console.print(f"wrote {write}", highlight=False, markup=False)


def _open_pcap(path: str):
    try:
        return open(path, "wb")  # noqa: SIM115 - closed with the capture, below
    except OSError as exc:
        raise click.BadParameter(f"cannot write {path}: {exc.strerror}", param_hint="-w") from None


def _stream_until_stopped(running, sink) -> None:  # noqa: ANN001 - fabric.LiveCapture, a binary file
    """Copy the capture to ``sink`` until tcpdump ends: its count reached, or Ctrl-C / SIGTERM.

    The first signal asks tcpdump to finish, and the copy goes on until its
    last byte, so a pcap file is whole; a second one gives up at once.
    """
    def finish(signum, frame) -> None:  # noqa: ANN001 - signal handler
        if running.stopped:
            raise KeyboardInterrupt
        running.stop()

    previous = {sig: signal.signal(sig, finish) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for chunk in running:
            sink.write(chunk)
            sink.flush()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@main.command()
@click.argument("lab")
@_guard
def reset(lab: str) -> None:
    """Put a lab back as it came up: every host made again from the plan (queues, mailboxes, configurations).

    The lab keeps its handle, run id, addresses, networks and time to live; a stopped host runs again.
    """
    from .render import lab_files

    started = time.monotonic()
    _, live = _attach(lab)
    plan = live.plan
    live.progress = lambda line: console.print(f"  {line}", highlight=False, markup=False)
    files = lab_files(plan)
    data_dirs = {h.name: adapter_for(h.software).data_dirs for h in plan.hosts.values()}
    handle = plan.labels.get(LABEL_HANDLE) or plan.run_id
    try:
        removed = live.remove_hosts()
        console.print(f"removed {removed} host container(s) and their queues and mailboxes", highlight=False)
        live.up(files, data_dirs)
    except KeyboardInterrupt:
        # Not _guard's "the lab's Docker objects were removed": its networks are there, some hosts may be.
        live.cancel()
        console.print(f"reset interrupted: {handle} is half made; `testbed reset {handle}` again, or "
                      f"`testbed down {handle}`", style="red", highlight=False, markup=False)
        sys.exit(130)
    out.print(f"{handle} is reset: {len(plan.hosts)} hosts as they came up, in {time.monotonic() - started:.1f} s",
              highlight=False)


@main.command()
@click.argument("lab")
@click.option("--from", "sender", required=True, help="The envelope sender, e.g. user@skimbee.net.")
@click.option("--to", "recipients", required=True, multiple=True, help="A recipient (repeatable).")
@click.option("--via", help="The MTA host the client submits to (default: the sender's domain's relay or MX).")
@click.option("--client", "client_host", help="The client host that submits it (default: the lab's first client).")
@click.option("--subject", help="Its Subject (default: testbed ID).")
@click.option("--json", "as_json", is_flag=True, help="Print the message's history as JSON.")
@_guard
def send(lab: str, sender: str, recipients: tuple[str, ...], via: str | None, client_host: str | None,
         subject: str | None, as_json: bool) -> None:
    """Send a message in a live lab and follow it like a scenario's: every hop, its family, the bounce."""
    from .livesend import follow_message, send_step

    ref, live = _attach(lab)
    step = send_step(live.plan, sender, list(recipients), via, client_host, subject)
    with ProgressView(console) as view:
        history, directory = follow_message(live, step, ref.run_dir or Path("runs"),
                                            progress=lambda m: view.lab(ref.handle or ref.run_id, m))
    if as_json:
        out.print_json(json.dumps({**history.to_dict(), "directory": str(directory)}))
    else:
        from .report import history_block

        for line in history_block(history):
            out.print(line)
        out.print(f"  evidence: {directory}", highlight=False)
    sys.exit(0 if history.hops else EXIT_FAILED)
