"""Running a topology's scenario steps against a live lab.

"Settle" never sleeps a fixed time: it polls every MTA's queue and log until
nothing is in flight, every queue flush has been acted on, and the logs have
been quiet for a short window.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import faults
from .adapters import ClientAdapter, ClientRequest, DnsAdapter, HostAdapter, adapter_for, mta_adapter
from .adapters.base import RESOLVER_MODELS
from .clientrun import ClientResult
from .clienttrace import parse_runs
from .errors import HostDown, LabError
from .events import QueueEntry
from .labapi import ExecResult, LiveLab
from .mailbox import mailbox_password
from .model import (
    ClientSpec,
    ClientStep,
    DnsStep,
    FaultStep,
    FlushStep,
    SendSpec,
    SendStep,
    SettleStep,
    StartServiceStep,
    StartStep,
    StopServiceStep,
    StopStep,
)
from .observe import mta_hosts, parallel
from .plan import LabPlan
from .rundir import RunDir

PROBE_TIMEOUT_S = 20
#: Consecutive failed probes of one host before settle gives up on it.
PROBE_FAILURES_ALLOWED = 3
_LOG_MARK = "@@testbed-log-size@@"
_TAIL_MARK = "@@testbed-log-since-flush@@"


class ScenarioError(LabError):
    """A step could not be carried out (the lab never settled, a host did not come back)."""


@dataclass
class StepRecord:
    index: int
    kind: str
    summary: str
    started_s: float
    duration_s: float = 0.0
    ok: bool = True
    detail: dict[str, Any] = field(default_factory=dict)
    #: Wall-clock start (epoch seconds), for the run's timeline.
    started_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "summary": self.summary,
            "started_at": round(self.started_at, 6),
            "started_s": round(self.started_s, 3),
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "detail": self.detail,
        }


def message_id_for(name: str, run_id: str, client_fqdn: str) -> str:
    return f"<{name}.{run_id}@{client_fqdn}>"


@dataclass
class _Probe:
    queue: list[QueueEntry] | None  # None: host down
    log_size: int
    #: Why the host could not be probed this time (an exec that timed out under
    #: load); settle counts it as "not settled yet" and gives up only if it persists.
    trouble: str = ""
    #: The log since the host's last flush (read in the same exec), if it was flushed.
    since_flush: str | None = None


class QuietWindow:
    """Has the lab been calm, with logs that did not grow, for ``quiet`` seconds?

    Calm: nothing in flight, no flush waiting to be acted on, every host probed.
    A run of calm probes that all saw the same log sizes proves the logs did not
    grow between the end of its first probe and the start of its latest one
    (each probe read the sizes somewhere in between its own start and end), so
    that span, and nothing longer, counts as quiet. Any change starts over.
    """

    def __init__(self, quiet: float):
        self.quiet = quiet
        self._since: float | None = None  # end of the first calm probe that saw these sizes
        self._sizes: dict[str, int] | None = None

    def probed(self, started: float, ended: float, sizes: dict[str, int], calm: bool) -> bool:
        """One probe, taken between ``started`` and ``ended``; True once the window is complete."""
        if not calm:
            self._since, self._sizes = None, None
            return False
        if self._since is None or sizes != self._sizes:
            self._since, self._sizes = ended, dict(sizes)
            return False
        return started - self._since >= self.quiet


class ScenarioRunner:
    def __init__(self, lab: LiveLab, run_dir: RunDir, progress: Callable[[str], None] = lambda _: None,
                 plan: LabPlan | None = None, message_tag: str | None = None):
        """``plan``: the steps to run, when not the lab's own (`testbed check`: a check's steps in a live lab);
        ``message_tag``: in every Message-ID instead of the run id, so a message sent again is a new one."""
        self.lab = lab
        self.plan = plan or lab.plan
        self.message_tag = message_tag or self.plan.run_id
        self.run_dir = run_dir
        self.progress = progress
        self.records: list[StepRecord] = []
        self.message_ids: dict[str, str] = {}
        self.sends: dict[str, dict[str, Any]] = {}
        # host -> (log offset at flush time, queue ids that must show a new attempt)
        self._flushed: dict[str, tuple[int, set[str]]] = {}
        self._t0 = time.monotonic()
        #: Hosts not running: stopped by a step, or (a live lab) by the person working in it.
        self._down: set[str] = set() if plan is None else {h for h in self.plan.hosts if not lab.running(h)}
        self.clients: dict[str, ClientResult] = {}
        self._versions: dict[str, str] = {}

    # --- driver --------------------------------------------------------------------

    def run(self) -> list[StepRecord]:
        """Carry out every step; the first one that cannot be carried out stops the scenario.

        Its record stays (``ok: false`` and the error), and the error names the
        step, so the run ends as a lab error the user can act on.
        """
        steps = self.plan.scenario
        for index, step in enumerate(steps):
            self.lab.check_cancel()
            record = StepRecord(index, _kind(step), _summary(step), time.monotonic() - self._t0,
                                started_at=time.time())
            self.records.append(record)
            self.progress(f"step {index + 1}: {record.summary}")
            start = time.monotonic()
            try:
                self._dispatch(step, record)
            except LabError as exc:
                record.ok = False
                record.detail["error"] = str(exc)
                if self.lab.cancelled:
                    raise
                raise ScenarioError(f"step {index + 1} of {len(steps)} ({record.summary}) failed: {exc}") from None
            finally:
                record.duration_s = time.monotonic() - start
        return self.records

    def _dispatch(self, step: Any, record: StepRecord) -> None:
        if isinstance(step, SendStep):
            self.send(step.send, record)
        elif isinstance(step, StopStep):
            self.lab.stop(step.stop)
            self._down.add(step.stop)
        elif isinstance(step, StartStep):
            self._start(step.start)
        elif isinstance(step, StopServiceStep):
            res = self.lab.exec(step.stop_service, self._adapter(step.stop_service).stop_command())
            self._service_result(step.stop_service, "stopping", res, record)
        elif isinstance(step, StartServiceStep):
            host = step.start_service
            res = self.lab.exec(host, self._adapter(host).start_command(), timeout=60)
            self._service_result(host, "starting", res, record)
        elif isinstance(step, FlushStep):
            hosts = mta_hosts(self.plan) if step.flush == "all" else list(step.flush)
            self.flush([h for h in hosts if h not in self._down], record)
        elif isinstance(step, SettleStep):
            self.settle(step.settle.timeout, record)
        elif isinstance(step, DnsStep):
            self.dns(step, record)
        elif isinstance(step, ClientStep):
            self.client(step.client, record)
        elif isinstance(step, FaultStep):
            self.fault(step.fault.host, step.fault.settings(), record)

    # --- steps -----------------------------------------------------------------------

    def send(self, spec: SendSpec, record: StepRecord) -> None:
        client_name = spec.client or next(h.name for h in self.plan.hosts.values() if h.kind == "client")
        client = self.plan.hosts[client_name]
        server = self.plan.hosts[spec.via]
        message_id = message_id_for(spec.id, self.message_tag, client.fqdn)
        self.message_ids[spec.id] = message_id
        swaks = adapter_for(client.software, ClientAdapter)
        cmd = swaks.send_command(
            server=server.fqdn,
            sender=spec.sender,
            recipients=spec.to,
            message_id=message_id,
            subject=spec.subject or f"testbed {spec.id}",
            helo=client.fqdn,
            family=spec.family,
        )
        res = self.lab.exec(client_name, cmd, timeout=60)
        self.run_dir.write_text(f"sends/{spec.id}.txt", f"$ {cmd}\n{res.stdout}{res.stderr}")
        reply = swaks.last_reply(res.stdout)
        record.ok = res.ok
        record.detail = {"message_id": message_id, "client": client_name, "server": server.fqdn, "reply": reply}
        self.sends[spec.id] = {**record.detail, "accepted": res.ok}
        if not res.ok:
            raise ScenarioError(
                f"{spec.via} did not accept {spec.id} from {client_name}: "
                + (f"it replied {reply}" if reply else _decisive_output(res))
                + f" (transcript: sends/{spec.id}.txt)"
            )

    def _service_result(self, host: str, doing: str, res: ExecResult, record: StepRecord) -> None:
        record.ok, record.detail = res.ok, {"output": (res.stdout + res.stderr).strip()}
        if not res.ok:
            raise ScenarioError(f"{doing} the service on {host} failed: {_decisive_output(res)}")

    def _start(self, host_name: str) -> None:
        self.lab.start(host_name)
        self._down.discard(host_name)

    def flush(self, hosts: list[str], record: StepRecord) -> None:
        probes = self._probe(hosts)
        for _ in range(PROBE_FAILURES_ALLOWED - 1):
            retry = [h for h, p in probes.items() if p.trouble]
            if not retry:
                break
            probes.update(self._probe(retry))
        troubled = {h: p.trouble for h, p in probes.items() if p.trouble}
        if troubled:
            raise ScenarioError(f"cannot read the queue of {', '.join(f'{h} ({why})' for h, why in troubled.items())}")
        flushed: dict[str, list[str]] = {}
        for host in hosts:
            probe = probes[host]
            if probe.queue is None:
                continue
            waiting = {e.queue_id for e in probe.queue if not e.in_flight}
            self._flushed[host] = (probe.log_size, waiting)
            adapter = mta_adapter(self.plan.hosts[host].software)
            res = self.lab.exec(host, adapter.flush_command())
            if not res.ok:
                raise ScenarioError(f"flushing {host} failed: {(res.stdout + res.stderr).strip()}")
            flushed[host] = sorted(waiting)
        record.detail = {"flushed": flushed}

    def settle(self, timeout: float | None, record: StepRecord) -> None:
        timing = self.plan.timing
        timeout = timing.settle_timeout if timeout is None else timeout
        hosts = [h for h in mta_hosts(self.plan) if h not in self._down]
        deadline = time.monotonic() + timeout
        quiet = QuietWindow(timing.settle_quiet)
        polls = 0
        failures: dict[str, int] = {}
        while True:
            self.lab.check_cancel()
            started = time.monotonic()
            probes = self._probe(hosts)
            polls += 1
            troubled = {h: p.trouble for h, p in probes.items() if p.trouble}
            for host in probes:
                failures[host] = failures.get(host, 0) + 1 if host in troubled else 0
            stuck = {h: troubled[h] for h, n in failures.items() if n >= PROBE_FAILURES_ALLOWED}
            if stuck:
                raise ScenarioError(f"cannot read the queue of {', '.join(f'{h} ({why})' for h, why in stuck.items())}")
            busy = {h: [e.queue_id for e in p.queue if e.in_flight] for h, p in probes.items() if p.queue}
            busy = {h: ids for h, ids in busy.items() if ids}
            pending = self._pending_flushes(probes)
            sizes = {h: p.log_size for h, p in probes.items()}
            now = time.monotonic()
            if quiet.probed(started, now, sizes, calm=not busy and not pending and not troubled):
                break
            if now > deadline:
                raise ScenarioError(
                    f"the lab did not settle within {timeout:.0f} s "
                    f"(in flight: {busy or 'nothing'}; flushes not yet acted on: {pending or 'none'})"
                )
            time.sleep(timing.settle_poll)
        snapshot = {h: [e.to_dict() for e in p.queue] if p.queue is not None else None for h, p in probes.items()}
        self.run_dir.write_json(f"queues/step-{record.index + 1:02d}.json", snapshot)
        record.detail = {"polls": polls, "queued": {h: len(q) for h, q in snapshot.items() if q}}

    def dns(self, step: DnsStep, record: StepRecord) -> None:
        spec = step.dns
        actions: list[tuple[str, list[dict[str, Any]] | None]] = []
        if spec.clear:
            actions.append(("clear", None))
        if spec.set is not None:
            actions.append(("set", spec.set))
        if spec.add is not None:
            actions.append(("add", spec.add))
        outputs = []
        for verb, rules in actions:
            rules = self.plan.dns_rules(rules) if rules is not None else None
            dns = adapter_for(self.plan.hosts[self.plan.dns_server].software, DnsAdapter)
            res = self.lab.exec(self.plan.dns_server, dns.control_command(verb, rules))
            if not res.ok:
                raise ScenarioError(f"the DNS server refused `{verb}`: {(res.stdout + res.stderr).strip()}")
            outputs.append(res.stdout.strip())
        record.detail = {"actions": [a for a, _ in actions], "output": outputs}

    def client(self, spec: ClientSpec, record: StepRecord) -> None:
        """Run one client under tb-trace; its outcome is an observation, not a step failure."""
        host = self.plan.hosts[spec.host]
        adapter = adapter_for(host.software, ClientAdapter)
        server = self.plan.hosts[spec.server].fqdn if spec.server in self.plan.hosts else spec.server
        timeout = spec.timeout or self.plan.timing.client_timeout
        domain = host.fqdn.partition(".")[2] or host.fqdn
        request = ClientRequest(
            action=spec.action,
            protocol=spec.the_protocol,
            server=server,
            port=spec.the_port,
            timeout_s=timeout,
            family=spec.family,
            sender=spec.sender or f"{spec.host}@{domain}",
            recipients=tuple(spec.to),
            message_id=message_id_for(spec.id, self.message_tag, host.fqdn),
            subject=spec.subject or f"testbed {spec.id}",
            helo=host.fqdn,
            user=spec.mailbox or "",
            password=mailbox_password(spec.mailbox) if spec.mailbox else "",
        )
        try:
            cmd = adapter.traced_command(request, spec.resolver, spec.repeat)
        except ValueError as exc:  # validation refuses what an adapter cannot do; this is the last guard
            raise ScenarioError(f"client step {spec.id}: {exc}") from None
        # Every address may cost a timeout; the model resolver and tracing add a few seconds.
        res = self.lab.exec(spec.host, cmd, timeout=int(8 * timeout) * spec.repeat + 30)
        self.run_dir.write_text(f"clients/{spec.id}.txt", f"$ {cmd}\n{res.stdout}{res.stderr}")
        try:
            # The client's own addresses: its planned ones; the capture's direction tells the rest
            # (a temporary address the kernel made).
            traces = parse_runs(res.stdout, {str(a) for a in host.addresses()})
        except ValueError as exc:
            raise ScenarioError(
                f"client step {spec.id} on {spec.host}: no trace ({exc}); {_decisive_output(res)}"
                f" (transcript: clients/{spec.id}.txt)"
            ) from None
        version = self._version(spec.host, adapter)
        hosts_by_address = {str(a): h.name for h in self.plan.hosts.values() for a in h.addresses()}
        results = []
        for run, trace in enumerate(traces, 1):
            repeated = spec.repeat > 1
            result = ClientResult(
                id=f"{spec.id}.{run}" if repeated else spec.id, host=spec.host, software=host.software,
                version=version, model_of=adapter.model_of, model_source=adapter.model_source,
                resolver=spec.resolver,
                resolver_model_of=(trace.resolver or {}).get("models") if spec.resolver in RESOLVER_MODELS else None,
                action=spec.action, protocol=spec.the_protocol, server=server, port=spec.the_port,
                family=spec.family, timeout_s=timeout, labels=dict(spec.labels), trace=trace,
                outcome=adapter.outcome(trace.rc, trace.stdout, trace.stderr),
                hosts_by_address=hosts_by_address, step=spec.id, run=run if repeated else None,
            )
            self.clients[result.id] = result
            self.run_dir.write_json(f"clients/{result.id}.json", result.to_dict())
            results.append(result)
        ok = sum(r.outcome.ok for r in results)
        summary = results[0].summary() if len(results) == 1 else f"{ok}/{len(results)} runs ok"
        record.detail = {"client": spec.id, "summary": summary, "ok": ok == len(results)}

    def _version(self, host: str, adapter: ClientAdapter) -> str:
        """The client software's version, asked once per host."""
        if host not in self._versions:
            cmd = adapter.version_command()
            out = self.lab.exec(host, cmd, timeout=20) if cmd else None
            self._versions[host] = adapter.parse_version(out.stdout) if out and out.ok else ""
        return self._versions[host]

    def fault(self, host: str, settings: dict[str, str], record: StepRecord) -> None:
        """Break or mend the paths to a host (black hole at its routers, refused TCP at the host)."""
        done = []
        for target, cmd in faults.fault_commands(self.plan, host, settings):
            res = self.lab.exec(target, cmd, timeout=20)
            if not res.ok:
                raise ScenarioError(f"setting a fault on {target} failed: {_decisive_output(res)}")
            done.append(f"{target}: {cmd}")
        record.detail = {"fault": faults.describe(host, settings), "commands": done}

    def _adapter(self, host: str) -> HostAdapter:
        return adapter_for(self.plan.hosts[host].software)

    # --- probing ---------------------------------------------------------------------

    def _probe(self, hosts: list[str]) -> dict[str, _Probe]:
        """Queue and log size of each host in one exec per host, in parallel.

        A host with a flush not yet acted on also shows its log since the flush,
        in the same exec (no second round of execs per poll).
        """

        def one(host: str) -> _Probe:
            adapter = mta_adapter(self.plan.hosts[host].software)
            log = adapter.mail_log
            cmd = (
                f"out=$({adapter.queue_command()} 2>&1); rc=$?; printf '%s\\n' \"$out\"; "
                f"echo {_LOG_MARK} $rc; if [ -e {log} ]; then wc -c < {log}; else echo 0; fi"
            )
            if host in self._flushed:
                cmd += f"; echo {_TAIL_MARK}; tail -c +{self._flushed[host][0] + 1} {log} 2>/dev/null"
            try:
                res = self.lab.exec(host, cmd, timeout=PROBE_TIMEOUT_S)
            except HostDown:
                return _Probe(None, 0)
            head, mark, tail = res.stdout.partition(_LOG_MARK)
            if not mark:
                if not self.lab.running(host):
                    return _Probe(None, 0)
                output = (res.stdout + res.stderr).strip()[-500:] or "no output"
                return _Probe(None, 0, trouble=f"exit {res.rc}: {output}")
            tail, tail_mark, since_flush = tail.partition(_TAIL_MARK)
            rc, _, size = tail.strip().partition("\n")
            if rc.strip() != "0":
                raise ScenarioError(
                    f"`{adapter.queue_command()}` failed on {host} (exit {rc.strip()}): {head.strip()[-500:]}"
                )
            try:
                log_size = int(size.strip() or 0)
            except ValueError:
                log_size = 0
            return _Probe(adapter.parse_queue(head), log_size, since_flush=since_flush if tail_mark else None)

        return parallel(one, hosts)

    def _pending_flushes(self, probes: dict[str, _Probe]) -> dict[str, list[str]]:
        """Flushed queue ids still queued with no log line since the flush."""
        pending: dict[str, list[str]] = {}
        for host, (offset, ids) in list(self._flushed.items()):
            probe = probes.get(host)
            if probe is None or probe.queue is None:
                continue
            queued = {e.queue_id for e in probe.queue}
            waiting = ids & queued
            if waiting:
                tail = probe.since_flush
                if tail is None:  # probed before the flush was recorded
                    log = mta_adapter(self.plan.hosts[host].software).mail_log
                    tail = self.lab.exec(host, f"tail -c +{offset + 1} {log}", timeout=10).stdout
                waiting = {q for q in waiting if q not in tail}
            if waiting:
                pending[host] = sorted(waiting)
            else:
                del self._flushed[host]
        return pending


def _decisive_output(res: ExecResult, lines: int = 3) -> str:
    """The last lines a failed command printed (its error is there), or its exit status."""
    text = [line.strip() for line in (res.stdout + "\n" + res.stderr).splitlines() if line.strip()]
    if res.rc == 124:
        return "timed out" + (f" ({' / '.join(text[-lines:])})" if text else "")
    return " / ".join(text[-lines:]) if text else f"exit status {res.rc}, no output"


def _kind(step: Any) -> str:
    return next(iter(type(step).model_fields))


def _summary(step: Any) -> str:
    if isinstance(step, SendStep):
        s = step.send
        return f"send {s.id}: {s.sender} -> {', '.join(s.to)} via {s.via}"
    if isinstance(step, StopStep):
        return f"stop host {step.stop}"
    if isinstance(step, StartStep):
        return f"start host {step.start}"
    if isinstance(step, StopServiceStep):
        return f"stop the service on {step.stop_service}"
    if isinstance(step, StartServiceStep):
        return f"start the service on {step.start_service}"
    if isinstance(step, FlushStep):
        return "flush " + ("every queue" if step.flush == "all" else ", ".join(step.flush))
    if isinstance(step, SettleStep):
        return "settle"
    if isinstance(step, DnsStep):
        return "change DNS rules"
    if isinstance(step, ClientStep):
        c = step.client
        labels = " ".join(f"{k}={v}" for k, v in c.labels.items())
        return (f"client {c.id}: {c.host} {c.action} {c.the_protocol} to {c.server}"
                + (f" (resolver {c.resolver})" if c.resolver != "glibc" else "") + (f" [{labels}]" if labels else ""))
    if isinstance(step, FaultStep):
        return "fault " + faults.describe(step.fault.host, step.fault.settings())
    return type(step).__name__
