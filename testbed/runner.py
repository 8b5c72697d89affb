"""One command's worth of work: plan, build images, bring labs up, run, judge, tear down.

Several labs (the variants of a reproduction) run side by side, each on its
own subnets. Whatever happens - an error, Ctrl-C, SIGTERM - every lab's
Docker objects are removed before this module returns (unless asked to keep
them).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
from pydantic import ValidationError

from . import fabric, observe, pcapread, serverside, timeline
from .capture import CaptureFile
from .adapters import adapter_for
from .errors import TestbedError
from .fabric import Lab
from .labapi import LiveLab, ManagedLab
from .owner import owner_labels
from .model import Topology
from .plan import LABEL_RUN_DIR, IPNetwork, LabPlan, image_of, plan_lab
from .planstore import plan_to_dict
from .preflight import check_pools, host_reserved
from .render import lab_files, write_tree
from .results import RunResult
from .rundir import RunDir, runs_root
from .scenario import ScenarioRunner
from .track import Tracker
from .verdict import Observation, evaluate

Progress = Callable[[str, str], None]  # (lab label, message)


def _quiet(_label: str, _message: str) -> None:
    pass


@dataclass
class RunOptions:
    runs_root: Path = field(default_factory=runs_root)
    keep: bool = False
    suite: str | None = None
    progress: Progress = _quiet
    #: The engine's version, as each result records it (run_plans asks the engine once).
    engine: str = ""
    #: A pcap per segment in RUN_DIR/captures (capture.py), read into the timeline.
    capture: bool = True
    #: False: bring the lab up and stop there (`testbed up`): no steps, nothing judged.
    scenario: bool = True


def new_run_id() -> str:
    return secrets.token_hex(4)


def plan_runs(
    client: docker.DockerClient, topologies: Sequence[Topology], suite: str | None = None
) -> list[LabPlan]:
    """Plan labs on subnets that clash with nothing on the machine, nor with each other."""
    reserved = host_reserved()
    for topo in topologies:
        check_pools(topo.pools, reserved)
    caps = fabric.engine_caps(client)
    used: list[IPNetwork] = [n for n, _ in fabric.docker_subnets(client)] + [r.network for r in reserved]
    plans = []
    for topo in topologies:
        plan = plan_lab(topo, new_run_id(), caps, used, suite=suite)
        plans.append(plan)
        used += [n for s in plan.segments.values() for n in s.subnets]
    return plans


ImageIds = dict[tuple[str, str], str]  # (suite, image name) -> image id


def ensure_images_for(plans: Sequence[LabPlan], progress: Progress = _quiet) -> ImageIds:
    """Build what the plans need; containers are then created from these exact ids."""
    by_suite: dict[str, set[str]] = {}
    for plan in plans:
        for suite, names in plan.image_suites.items():
            by_suite.setdefault(suite, set()).update(names)
    return _ensure_images(by_suite, progress)


def ensure_images_for_topologies(
    topologies: Sequence[tuple[Topology, str]], progress: Progress = _quiet
) -> ImageIds:
    """Build the images of (topology, suite) pairs before planning (the matrix), each suite once."""
    by_suite: dict[str, set[str]] = {}
    for topo, suite in topologies:
        for name, host in topo.hosts.items():
            by_suite.setdefault(host.suite or suite, set()).add(image_of(topo.software_of(name)))
    return _ensure_images(by_suite, progress)


def _ensure_images(by_suite: dict[str, set[str]], progress: Progress) -> ImageIds:
    from .images import ensure_images

    ids: ImageIds = {}
    for suite, names in sorted(by_suite.items()):
        built = ensure_images(sorted(names), suite, progress=lambda image, msg: progress(f"image {image}", msg))
        ids.update({(suite, name): image_id for name, image_id in built.items()})
    return ids


def run_plans(
    client: docker.DockerClient,
    plans: Sequence[LabPlan],
    options: RunOptions,
    images: ImageIds | None = None,
    jobs: int | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> list[RunResult]:
    """Run labs side by side (at most ``jobs`` at once); Ctrl-C or SIGTERM tears every one down.

    Results come back in the order of ``plans``; ``on_result`` hears of each as it finishes.
    """
    if not options.engine:
        options = dataclasses.replace(options, engine=fabric.engine_version(client))
    for plan in plans:
        plan.labels.update(owner_labels(options.keep))  # whose, and from which process (testbed ps)
    labs = [
        Lab(client, plan, progress=lambda m, p=plan: options.progress(_label(p), m), images=images)
        for plan in plans
    ]
    results: list[RunResult | None] = [None] * len(plans)
    workers = max(1, min(jobs or len(plans), len(plans)))
    with _terminate_as_interrupt(), ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_one, lab, options): i for i, lab in enumerate(labs)}
        try:
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for fut in done:
                    results[futures[fut]] = fut.result()
                    if on_result:
                        on_result(fut.result())
        except KeyboardInterrupt:
            for lab in labs:
                lab.cancel()
            with _ignore_interrupts("still removing the lab's containers and networks..."):
                wait(set(futures))
                for lab in labs:
                    lab.teardown()
            raise
    return [r for r in results if r is not None]


def run_one(lab: ManagedLab, options: RunOptions) -> RunResult:
    """Bring one lab up, run its scenario, judge it, and tear it down (always)."""
    plan = lab.plan
    run_dir = RunDir.create(options.runs_root, plan.name, plan.variant, plan.run_id)
    result = RunResult(plan, run_dir)
    api = ".".join(map(str, plan.caps.api_version))
    result.engine = f"Docker {options.engine} (API {api})" if options.engine else f"Docker (API {api})"
    progress = lab.progress
    plan.labels[LABEL_RUN_DIR] = str(run_dir.path.resolve())  # where commands in the live lab find plan.json
    try:
        t = time.monotonic()
        lab.create_networks(lambda used: _replan(plan, used))
        plan = result.plan = lab.plan
        files = lab_files(plan)
        write_tree(files, run_dir.path / "config")
        run_dir.write_json("plan.json", plan_to_dict(plan))
        progress(f"bringing up {len(plan.hosts)} containers on {len(plan.segments)} segments")
        data_dirs = {h.name: adapter_for(h.software).data_dirs for h in plan.hosts.values()}
        if options.capture:
            # The sidecar starts while the hosts do; both are ready before the first step.
            with ThreadPoolExecutor(max_workers=1) as side:
                capturing = side.submit(lab.start_capture)
                try:
                    lab.up(files, data_dirs)
                finally:
                    capturing.result()
        else:
            lab.up(files, data_dirs)
        result.timings["bring_up"] = time.monotonic() - t
        if not options.scenario:
            return result
        t = time.monotonic()
        runner = ScenarioRunner(lab, run_dir, progress=progress)
        try:
            runner.run()
        except TestbedError as exc:
            # A step that could not be carried out: keep the evidence, judge nothing.
            result.error = str(exc)
            progress(f"error: {exc}")
        finally:
            result.steps = [r.to_dict() for r in runner.records]
            result.clients = dict(runner.clients)
            result.timings["scenario"] = time.monotonic() - t
        t = time.monotonic()
        if not lab.cancelled:
            _judge(lab, run_dir, runner, result, verdict=result.error is None)
        result.timings["collect"] = time.monotonic() - t
    except TestbedError as exc:
        result.error = result.error or str(exc)
        progress(f"error: {exc}")
    finally:
        if lab.cancelled or not options.keep:
            t = time.monotonic()
            try:
                _save_container_logs(lab, run_dir)
            except (TestbedError, docker.errors.DockerException, OSError) as exc:
                progress(f"could not save the containers' logs: {exc}")  # teardown must still happen
            try:
                lab.teardown()
            except TestbedError as exc:  # the verdict stands; what is left is named (and `testbed ps` shows it)
                progress(f"teardown: {exc}")
            result.timings["teardown"] = time.monotonic() - t
        else:
            result.kept = True
        try:
            document = result.document()
        except ValidationError:  # a writer's bug (the tests see it); the run's evidence stays readable
            run_dir.write_json("result.json", result.to_dict())
            raise
        run_dir.write_json("result.json", document)
        write_html_report(run_dir.path, progress)
    return result


def write_html_report(path: Path, progress: Callable[[str], None]) -> None:
    """RUN_DIR/report.html from the run directory; a failure is a progress line, never the run's failure."""
    from .htmlreport import write_report

    try:
        _, warnings = write_report(path)
    except Exception as exc:  # noqa: BLE001 - the run's verdict is in result.json whatever happens here
        progress(f"could not write report.html: {type(exc).__name__}: {exc}")
        return
    for warning in warnings:
        progress(f"report.html: {warning}")


def _replan(plan: LabPlan, used: list[IPNetwork]) -> LabPlan:
    """The same lab (run id, engine, suite) on subnets clear of ``used`` and of the machine's own."""
    reserved = [r.network for r in host_reserved()]
    moved = plan_lab(plan.topology, plan.run_id, plan.caps, used + reserved, suite=plan.suite)
    moved.labels.update(plan.labels)
    return moved


def _judge(lab: ManagedLab, run_dir: RunDir, runner: ScenarioRunner, result: RunResult, verdict: bool = True) -> None:
    """Collect the lab's evidence into the run directory; with ``verdict``, judge it too."""
    # The capture first: what follows (reading mailboxes over IMAP) is the testbed's, not the scenario's.
    result.captures = lab.collect_captures(run_dir.path)
    obs = collect_evidence(lab, run_dir, runner, capture_connections(run_dir, result.captures))
    result.histories = obs.histories
    result.versions = observe.versions(lab)
    if verdict:
        result.checks = evaluate(lab.plan, obs)


def collect_evidence(lab: LiveLab, run_dir: RunDir, runner: ScenarioRunner,
                     captured: Sequence[pcapread.SeenConnection] = ()) -> Observation:
    """Everything the verdict reads, written into the run directory as well (logs, queues, timeline...).

    Also what `testbed check` reads after its own steps in a live lab: the messages are the
    runner's plan's (a check's own steps), the hosts the lab's.
    """
    plan = runner.plan
    # One kind of evidence after the other (each is read from every host at once):
    # reading them all at once as well was tried, and more execs at a time make
    # docker-py's exec streams lose their framing under load ("79 is not a valid
    # stream", docker-py#3160).
    logs = observe.mail_logs(lab)
    for host, text in logs.items():
        run_dir.write_text(f"logs/{host}/mail.log", text)
    events = observe.events_from_logs(plan, logs)
    run_dir.write_text("events.jsonl", "".join(json.dumps(e.to_dict()) + "\n" for e in events))
    connections = observe.connections_from_logs(plan, logs)
    run_dir.write_text("connections.jsonl", "".join(json.dumps(c.to_dict()) + "\n" for c in connections))
    for client_id, received in serverside.attribute(runner.clients.values(), connections).items():
        client = runner.clients[client_id]
        client.received_by = received
        run_dir.write_json(f"clients/{client_id}.json", client.to_dict())
    queues = observe.queues(lab)
    run_dir.write_json("queues/final.json", {h: [e.to_dict() for e in q] if q is not None else None for h, q in queues.items()})
    mailboxes = observe.mailboxes(lab)
    run_dir.write_json("mailboxes.json", {a: [m.to_dict() for m in msgs] if msgs is not None else None
                                          for a, msgs in mailboxes.items()})
    dns_log = observe.dns_query_log(lab)
    run_dir.write_text("dns-queries.jsonl", dns_log)
    tracker = Tracker(plan, events, {h: q for h, q in queues.items() if q})
    specs = plan.messages()
    histories = {
        name: tracker.history(name, runner.message_ids[name], tuple(spec.to))
        for name, spec in specs.items()
        if name in runner.message_ids
    }
    dns_queries = observe.parse_query_log(dns_log)
    entries = timeline.build([r.to_dict() for r in runner.records], dns_queries, runner.clients.values(),
                             connections, events, histories, plan.dns_server, time.gmtime().tm_year,
                             captured=captured, message_ids=runner.message_ids,
                             host_of=plan.host_by_address)
    run_dir.write_text("timeline.jsonl", timeline.jsonl(entries))
    return Observation(
        histories=histories,
        mailboxes=mailboxes,
        queues=queues,
        dns_queries=dns_queries,
        logs=logs,
        message_ids=runner.message_ids,
        clients=runner.clients,
        connections=connections,
    )


def run_in_live_lab(lab: LiveLab, topology: Topology, run_dir: RunDir, progress: Callable[[str], None] = lambda _m: None,
                    message_tag: str | None = None) -> tuple[LabPlan, Observation]:
    """Another scenario in a live lab (`testbed check`, `testbed send`): ``topology`` is the lab's own
    with its scenario and expectations replaced. Its steps run, the evidence is collected into
    ``run_dir`` (steps.json, logs, timeline...); the plan it ran is returned with the observation."""
    plan = dataclasses.replace(lab.plan, topology=topology)
    runner = ScenarioRunner(lab, run_dir, progress=progress, plan=plan, message_tag=message_tag)
    try:
        runner.run()
    finally:
        run_dir.write_json("steps.json", [r.to_dict() for r in runner.records])
    return plan, collect_evidence(lab, run_dir, runner)


def capture_connections(run_dir: RunDir, captures: Sequence[CaptureFile]) -> list[pcapread.SeenConnection]:
    """The TCP connections of every segment's capture, each once; written to captures/connections.jsonl."""
    readings = {}
    for cap in captures:
        with open(run_dir.path / cap.file, "rb") as f:
            readings[cap.segment] = pcapread.read_capture(f)
    seen = pcapread.merge_segments(readings)
    if captures:
        run_dir.write_text("captures/connections.jsonl", "".join(json.dumps(c.to_dict()) + "\n" for c in seen))
    return seen


def _save_container_logs(lab: ManagedLab, run_dir: RunDir) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:  # one engine call each: waiting, side by side
        texts = dict(zip(lab.plan.hosts, pool.map(lab.container_log, lab.plan.hosts)))
    for host, text in texts.items():
        if text:
            run_dir.write_text(f"logs/{host}/container.log", text)


def _label(plan: LabPlan) -> str:
    return f"{plan.name}/{plan.variant}"


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (docker stop, CI timeouts) cleans up like Ctrl-C does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    # SIGHUP: the terminal went away (a closed window, a dropped ssh session).
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@contextmanager
def _ignore_interrupts(message: str) -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        print(message, flush=True)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)

