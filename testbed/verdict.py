"""Checking a topology's expectations against what was observed (pure)."""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .clientrun import ClientResult, family_of
from .events import MailboxMessage, QueueEntry, ServerConnection
from .model import (
    EXPECT_KINDS,
    ClientExpect,
    DistributionCheck,
    DistributionExpect,
    DsnCheck,
    DsnExpect,
    DnsExpect,
    LogExpect,
    MailboxExpect,
    MessageExpect,
    QueueExpect,
    compile_log_pattern,
)
from .plan import LabPlan
from .track import History, dsn_in_mailbox


@dataclass
class Observation:
    """Everything the verdict looks at, collected after the scenario."""

    histories: dict[str, History]
    mailboxes: dict[str, list[MailboxMessage]]
    queues: dict[str, list[QueueEntry] | None]
    dns_queries: list[dict[str, Any]]
    logs: dict[str, str]
    message_ids: dict[str, str] = field(default_factory=dict)
    clients: dict[str, ClientResult] = field(default_factory=dict)
    #: Every client connection the servers' own logs show.
    connections: list[ServerConnection] = field(default_factory=list)


@dataclass(frozen=True)
class Check:
    index: int
    kind: str
    description: str
    status: str  # pass | fail | n/a
    detail: str
    #: A distribution expectation's counts: server (or "elsewhere", "not in a server's log", "failed") -> n.
    histogram: dict[str, int] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status != "fail"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "kind": self.kind,
            "description": self.description,
            "status": self.status,
            "detail": self.detail,
            **({"histogram": self.histogram} if self.histogram else {}),
        }


def evaluate(plan: LabPlan, obs: Observation) -> list[Check]:
    checks = []
    for index, exp in enumerate(plan.expectations):
        kind = next(k for k in EXPECT_KINDS if k in type(exp).model_fields)
        mismatch = {h: sw for h, sw in exp.when.items() if plan.hosts[h].software not in sw}
        if mismatch:
            detail = "applies only when " + ", ".join(f"{h} runs {' or '.join(sw)}" for h, sw in exp.when.items())
            checks.append(Check(index, kind, exp.description, "n/a", detail))
            continue
        failures, facts = _CHECKERS[kind](plan, obs, exp)
        status = "fail" if failures else "pass"
        histogram = distribution_counts(obs, exp.distribution) if isinstance(exp, DistributionExpect) else {}
        checks.append(Check(index, kind, exp.description or _describe(exp), status, "; ".join(failures or facts),
                            histogram))
    return checks


def _describe(exp: Any) -> str:
    """`dns: client=relay type=MX count=0` for an expectation without a description."""
    data = exp.model_dump(exclude_defaults=True, exclude={"description", "when"})

    def flat(value: Any) -> str:
        if isinstance(value, dict):
            return " ".join(f"{k}={flat(v)}" for k, v in value.items())
        if isinstance(value, list):
            return ",".join(map(str, value))
        return str(value)

    kind = next(iter(data), "")
    if isinstance(data.get(kind), dict):
        return f"{kind}: {flat(data.pop(kind))}" + (f" {flat(data)}" if data else "")
    return flat(data)


def _message(plan: LabPlan, obs: Observation, exp: MessageExpect) -> tuple[list[str], list[str]]:
    hist = obs.histories.get(exp.message)
    if hist is None:
        return [f"{exp.message} was never seen by any MTA"], []
    fails: list[str] = []
    facts: list[str] = []

    def compare(label: str, wanted: Any, actual: Any) -> None:
        if wanted is None:
            return
        (fails if wanted != actual else facts).append(f"{label}: expected {wanted}, got {actual}")

    compare("state", exp.state, hist.state)
    compare("delivered", exp.delivered, hist.delivered)
    compare("path", exp.path, hist.path)
    if exp.dsn_generated_at is not None:
        compare("bounce generated at", exp.dsn_generated_at, ", ".join(hist.dsn_generated_at) or "nowhere")
    compare("bounce delivered to the sender", exp.dsn_delivered, hist.dsn_delivered)
    compare("still queued at", exp.queued_at, hist.queued_at)
    return fails, [f.replace("expected ", "", 1).split(", got ")[0] for f in facts]


def _dns(plan: LabPlan, obs: Observation, exp: DnsExpect) -> tuple[list[str], list[str]]:
    check = exp.dns
    queries = obs.dns_queries
    if check.client:
        addrs = {str(a) for a in plan.hosts[check.client].addresses()}
        queries = [q for q in queries if q.get("client") in addrs]
    if check.type:
        wanted_types = {t.upper() for t in check.type}
        queries = [q for q in queries if str(q.get("type", "")).upper() in wanted_types]
    if check.name:
        want = check.name.rstrip(".").lower()
        queries = [q for q in queries if str(q.get("name", "")).rstrip(".").lower() == want]
    if check.rcode:
        queries = [q for q in queries if str(q.get("rcode", "")).upper() == check.rcode.upper()]
    if check.rule:
        queries = [q for q in queries if q.get("rule") == check.rule]
    if check.step:
        client = obs.clients.get(check.step)
        if client is None:
            return [f"client step {check.step} did not run"], []
        start, end = client.window
        queries = [q for q in queries if start <= _epoch(q) <= end]
    n = len(queries)
    what = " ".join(filter(None, [
        "/".join(check.type or []), "queries",
        f"for {check.name}" if check.name else "",
        f"from {check.client}" if check.client else "",
        f"answered {check.rcode}" if check.rcode else "",
        f"by rule {check.rule}" if check.rule else "",
        f"during {check.step}" if check.step else "",
    ]))
    fails = []
    if check.count is not None and n != check.count:
        fails.append(f"{what}: expected {check.count}, saw {n}")
    if check.min is not None and n < check.min:
        fails.append(f"{what}: expected at least {check.min}, saw {n}")
    if check.max is not None and n > check.max:
        fails.append(f"{what}: expected at most {check.max}, saw {n}")
    facts = [f"{what}: {n}"]
    if check.within_ms is not None:
        times = sorted(float(q["t_ms"]) for q in queries if "t_ms" in q)
        spread = times[-1] - times[0] if len(times) > 1 else None
        if spread is None:
            fails.append(f"{what}: need at least two queries to measure their spread, saw {len(times)}")
        elif spread > check.within_ms:
            fails.append(f"{what}: {spread:.1f} ms apart, expected within {check.within_ms:g} ms")
        else:
            facts.append(f"{spread:.1f} ms apart")
    return fails, facts


def _mailbox(plan: LabPlan, obs: Observation, exp: MailboxExpect) -> tuple[list[str], list[str]]:
    check = exp.mailbox
    messages = obs.mailboxes.get(check.address)
    if messages is None:
        return [f"mailbox {check.address} could not be read"], []
    fails: list[str] = []
    facts = [f"{check.address} holds {len(messages)} message(s)"]
    if check.count is not None and len(messages) != check.count:
        fails.append(f"{check.address}: expected {check.count} message(s), found {len(messages)}")
    if check.dsn_for is not None:
        mid = obs.message_ids.get(check.dsn_for, "")
        if dsn_in_mailbox(messages, mid):
            facts.append(f"a bounce for {check.dsn_for} is there")
        else:
            fails.append(f"{check.address}: no bounce for {check.dsn_for} ({mid}) among {len(messages)} message(s)")
    for key, present in (("has_message", True), ("absent_message", False)):
        name = getattr(check, key)
        if name is None:
            continue
        mid = obs.message_ids.get(name, "")
        found = any(m.message_id == mid for m in messages)
        if found != present:
            fails.append(f"{check.address}: {name} {'missing' if present else 'present'}")
    return fails, facts


def _queue(plan: LabPlan, obs: Observation, exp: QueueExpect) -> tuple[list[str], list[str]]:
    check = exp.queue
    entries = obs.queues.get(check.host)
    if entries is None:
        return [f"the queue of {check.host} could not be read (host down?)"], []
    fails = []
    if check.count is not None and len(entries) != check.count:
        summary = ", ".join(f"{e.queue_id} {e.state} {e.sender or '<>'} -> {','.join(e.recipients)}" for e in entries)
        fails.append(f"{check.host}: expected {check.count} queued, found {len(entries)} ({summary})")
    if check.message is not None:
        hist = obs.histories.get(check.message)
        ids = {h.queue_id for h in hist.hops if h.host == check.host} if hist else set()
        if not ids & {e.queue_id for e in entries}:
            fails.append(f"{check.message} is not in the queue of {check.host}")
    return fails, [f"{check.host} queue holds {len(entries)} message(s)"]


def _log(plan: LabPlan, obs: Observation, exp: LogExpect) -> tuple[list[str], list[str]]:
    check = exp.log
    text = obs.logs.get(check.host, "")
    match = compile_log_pattern(check.pattern).search(text)
    if bool(match) != check.present:
        return [f"{check.host} log {'lacks' if check.present else 'contains'} /{check.pattern}/"], []
    return [], [f"{check.host}: {match.group(0)!r}" if match else f"{check.host}: no /{check.pattern}/"]


def _epoch(query: dict[str, Any]) -> float:
    """A query's receipt time as epoch seconds (the DNS server's ``wall``; containers share the clock)."""
    try:
        return datetime.fromisoformat(str(query.get("wall", "")).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")  # compares false with every window


def _client(plan: LabPlan, obs: Observation, exp: ClientExpect) -> tuple[list[str], list[str]]:
    """Every client step the check names (a glob, narrowed by labels) must show what it says."""
    check = exp.client
    results = [r for sid, r in obs.clients.items()
               if fnmatch.fnmatchcase(sid, check.step) or fnmatch.fnmatchcase(r.step, check.step)]
    for key, values in check.labels.items():
        wanted = {str(v) for v in values}
        results = [r for r in results if str(r.labels.get(key)) in wanted]
    if not results:
        return [f"no client step matching {check.step} ran"], []
    fails: list[str] = []
    facts: list[str] = []
    for r in results:
        problems = _client_problems(plan, check, r)
        fails += [f"{r.id}: {p}" for p in problems]
        if not problems:
            facts.append(f"{r.id}: {r.summary()}")
    return fails, facts[:4] + ([f"... and {len(facts) - 4} more"] if len(facts) > 4 else [])


def _client_problems(plan: LabPlan, check: Any, r: ClientResult) -> list[str]:
    got = r.connected
    out: list[str] = []

    def compare(label: str, wanted: Any, actual: Any) -> None:
        if wanted is not None and wanted != actual:
            out.append(f"{label}: expected {wanted}, got {actual}")

    compare("ok", check.ok, r.outcome.ok)
    compare("connected", check.connected, got is not None)
    if check.family is not None:
        compare("family", check.family, got.family if got else "none")
    if check.address is not None:
        addresses = _addresses_of(plan, check.address)
        actual = got.address if got else "none"
        if actual not in addresses:
            out.append(f"address: expected {check.address}, got {actual}")
    n = len(r.attempts)
    compare("attempts", check.attempts, n)
    if check.min_attempts is not None and n < check.min_attempts:
        out.append(f"attempts: expected at least {check.min_attempts}, got {n}")
    if check.max_attempts is not None and n > check.max_attempts:
        out.append(f"attempts: expected at most {check.max_attempts}, got {n}")
    if check.within_ms is not None and r.total_ms > check.within_ms:
        out.append(f"took {r.total_ms:.0f} ms, expected within {check.within_ms:g} ms")
    if check.after_ms is not None and r.total_ms < check.after_ms:
        out.append(f"took {r.total_ms:.0f} ms, expected at least {check.after_ms:g} ms")
    if check.fallback_within_ms is not None or check.fallback_after_ms is not None:
        if got is None or not r.attempts or got is r.attempts[0]:
            out.append("no fallback: " + ("no connection" if got is None else "the first attempt connected"))
        else:
            gap = (got.started - r.attempts[0].started) * 1000
            if check.fallback_within_ms is not None and gap > check.fallback_within_ms:
                out.append(f"fell back after {gap:.0f} ms, expected within {check.fallback_within_ms:g} ms")
            if check.fallback_after_ms is not None and gap < check.fallback_after_ms:
                out.append(f"fell back after {gap:.0f} ms, expected at least {check.fallback_after_ms:g} ms")
    if check.resolved is not None:
        compare("resolved families", check.resolved, [family_of(a) for a in r.resolved])
    compare("resolver error", check.resolver_error, r.resolver_error)
    if check.source is not None:
        planned = {str(a) for a in plan.hosts[r.host].addresses()} if r.host in plan.hosts else set()
        source = got.source if got else ""
        actual = "none" if not source else ("planned" if source in planned else "unplanned")
        if actual != check.source:
            out.append(f"source: expected a{'n' if check.source == 'unplanned' else ''} {check.source} address, "
                       f"got {source or 'no connection'}")
    return out


#: Buckets of a distribution beside the servers counted.
ELSEWHERE, UNLOGGED, FAILED = "elsewhere", "not in a server's log", "failed"


def distribution_counts(obs: Observation, check: DistributionCheck) -> dict[str, int]:
    """server -> how many of the steps' runs (or messages) it received, plus the other buckets (when not 0)."""
    counts = dict.fromkeys(check.servers, 0)
    extra = dict.fromkeys((ELSEWHERE, UNLOGGED, FAILED), 0)
    if check.steps is not None:
        for r in obs.clients.values():
            if not (fnmatch.fnmatchcase(r.id, check.steps) or fnmatch.fnmatchcase(r.step, check.steps)):
                continue
            if r.connected is None:
                extra[FAILED] += 1
            elif (host := r.received_by_connected) is None:
                extra[UNLOGGED] += 1
            elif host in counts:
                counts[host] += 1
            else:
                extra[ELSEWHERE] += 1
    else:
        assert check.messages is not None
        for name, hist in obs.histories.items():
            if not fnmatch.fnmatchcase(name, check.messages):
                continue
            first = next((h for h in hist.path if h in counts), None)
            if first is None:
                extra[FAILED if not hist.path else ELSEWHERE] += 1
            else:
                counts[first] += 1
    return {**counts, **{k: v for k, v in extra.items() if v}}


def _distribution(plan: LabPlan, obs: Observation, exp: DistributionExpect) -> tuple[list[str], list[str]]:
    check = exp.distribution
    counts = distribution_counts(obs, check)
    total = sum(counts.values())
    at_servers = sum(counts[s] for s in check.servers)
    what = f"runs of {check.steps}" if check.steps is not None else f"messages {check.messages}"
    if total == 0:
        return [f"no {what} to count"], []

    def pct(n: int) -> float:
        return 100.0 * n / total

    shown = ", ".join(f"{k} {n} ({pct(n):.0f}%)" for k, n in counts.items())
    fails: list[str] = []
    if check.count is not None and at_servers != check.count:
        fails.append(f"expected {check.count} counted at {', '.join(check.servers)}, got {at_servers}")
    if check.all_to is not None and counts[check.all_to] != total:
        fails.append(f"expected all {total} at {check.all_to}")
    ranges = {s: check.each for s in check.servers} if check.each else {}
    ranges.update(check.share)
    for server, share in ranges.items():
        if share is not None and not share.min <= pct(counts[server]) <= share.max:
            fails.append(f"{server} got {pct(counts[server]):.0f}%, expected {share.min:g}-{share.max:g}%")
    if fails:
        fails.append(f"counted {total} {what}: {shown}")
        return fails, []
    return [], [f"{total} {what}: {shown}"]


def _status_matches(wanted: str, actual: str | None) -> bool:
    """5.1.1 matches 5.1.1; a class (5, 5.1) matches every status under it."""
    return actual is not None and (actual == wanted or actual.startswith(wanted + "."))


def _dsn_problems(plan: LabPlan, check: DsnCheck, block: Any, reporting: str | None) -> list[str]:
    out = []
    if check.action is not None and block.action != check.action:
        out.append(f"Action {block.action}, expected {check.action}")
    if check.status is not None and not _status_matches(check.status, block.status):
        out.append(f"Status {block.status}, expected {check.status}")
    for label, wanted, actual in (("Remote-MTA", check.remote_mta, block.remote_mta),
                                  ("Reporting-MTA", check.reporting_mta, reporting)):
        if wanted is not None:
            name = plan.hosts[wanted].fqdn if wanted in plan.hosts else wanted
            if (actual or "").rstrip(".").lower() != name.rstrip(".").lower():
                out.append(f"{label} {actual}, expected {name}")
    if check.diagnostic is not None and not compile_log_pattern(check.diagnostic).search(block.diagnostic_code or ""):
        out.append(f"Diagnostic-Code {block.diagnostic_code!r} does not match {check.diagnostic!r}")
    return out


def _dsn(plan: LabPlan, obs: Observation, exp: DsnExpect) -> tuple[list[str], list[str]]:
    check = exp.dsn
    message_id = obs.message_ids.get(check.for_)
    if message_id is None:
        return [f"{check.for_} was never sent"], []
    found = []
    for address, messages in obs.mailboxes.items():
        if check.mailbox is not None and address != check.mailbox:
            continue
        if messages is None:
            return [f"the mailbox {address} could not be read"], []
        found += [(address, m) for m in messages if m.is_dsn and message_id in m.refers_to]
    if not check.present:
        if found:
            return [f"a bounce for {check.for_} is in {', '.join(sorted({a for a, _ in found}))}"], []
        return [], [f"no bounce for {check.for_} in {check.mailbox or 'any mailbox'}"]
    if not found:
        return [f"no bounce for {check.for_} in {check.mailbox or 'any mailbox'}"], []
    problems: list[str] = []
    for address, msg in found:
        report = msg.dsn
        if report is None:
            problems.append(f"the bounce in {address} has no message/delivery-status part")
            continue
        for block in report.recipients:
            wrong = _dsn_problems(plan, check, block, report.reporting_mta)
            if not wrong:
                return [], [f"bounce in {address}: {block.action} {block.status} for {block.final_recipient}, "
                            f"from {report.reporting_mta}, remote {block.remote_mta}: {block.diagnostic_code}"]
            problems.append(f"{address}, {block.final_recipient}: " + ", ".join(wrong))
    return problems, []


def _addresses_of(plan: LabPlan, name: str) -> set[str]:
    if name in plan.hosts:
        return {str(a) for a in plan.hosts[name].addresses()}
    try:
        return {str(ipaddress.ip_address(name))}
    except ValueError:
        return {name}


_CHECKERS = {"message": _message, "dns": _dns, "mailbox": _mailbox, "queue": _queue, "log": _log, "client": _client,
             "distribution": _distribution, "dsn": _dsn}
