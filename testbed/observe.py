"""Looking into a running lab: logs, queues, mailboxes, the DNS query log.

The commands and parsers come from the adapters; this module only runs them
(through the fabric) and turns the outputs into typed results.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .adapters import DnsAdapter, adapter_for, mta_adapter
from .events import MailboxMessage, MailEvent, QueueEntry, ServerConnection
from .errors import HostDown
from .labapi import LiveLab
from .mailbox import parse_maildir_dump
from .plan import LabPlan


def mta_hosts(plan: LabPlan) -> list[str]:
    return [h.name for h in plan.hosts.values() if h.kind == "mta"]


def parallel(fn: Callable[[str], Any], items: list[str]) -> dict[str, Any]:
    """fn(host) for each host at once (each is a docker exec: waiting, not computing)."""
    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return dict(zip(items, pool.map(fn, items)))


def queues(lab: LiveLab, hosts: list[str] | None = None) -> dict[str, list[QueueEntry] | None]:
    """Queue of every (running) MTA; None for a host that is down."""
    plan = lab.plan

    def one(host: str) -> list[QueueEntry] | None:
        adapter = mta_adapter(plan.hosts[host].software)
        try:
            res = lab.exec(host, adapter.queue_command(), timeout=30)
        except HostDown:
            return None
        if not res.ok and not lab.running(host):  # it went down while listing
            return None
        return adapter.parse_queue(res.stdout)

    return parallel(one, hosts if hosts is not None else mta_hosts(plan))


def mail_logs(lab: LiveLab) -> dict[str, str]:
    """Each MTA's log; a host that is down has none to show ("")."""
    plan = lab.plan
    return parallel(lambda h: _read_unless_down(lab, h, mta_adapter(plan.hosts[h].software).mail_log), mta_hosts(plan))


def _read_unless_down(lab: LiveLab, host: str, path: str) -> str:
    try:
        return lab.read_file(host, path)
    except HostDown:
        return ""


def events_from_logs(plan: LabPlan, logs: dict[str, str]) -> list[MailEvent]:
    events: list[MailEvent] = []
    for host, text in logs.items():
        events += mta_adapter(plan.hosts[host].software).parse_log(text, host)
    return events


def connections_from_logs(plan: LabPlan, logs: dict[str, str]) -> list[ServerConnection]:
    """Every client connection the MTAs' own logs show."""
    out: list[ServerConnection] = []
    for host, text in logs.items():
        out += mta_adapter(plan.hosts[host].software).parse_connections(text, host)
    return out


def mailboxes(lab: LiveLab) -> dict[str, list[MailboxMessage] | None]:
    """Every mailbox of the topology; None for one that could not be read."""
    readers = {r.address: r for r in lab.plan.mailboxes}

    def read(address: str) -> list[MailboxMessage] | None:
        r = readers[address]
        try:
            res = lab.exec(r.host, r.command, timeout=30)
        except HostDown:
            return None
        return parse_maildir_dump(res.stdout) if res.ok else None

    return parallel(read, list(readers))


def versions(lab: LiveLab) -> dict[str, str]:
    """The version of each piece of software in the lab, asked of one running host each."""
    found: dict[str, str] = {}
    for host in lab.plan.hosts.values():
        command = adapter_for(host.software).version_command()
        if host.software in found or not command or not lab.running(host.name):
            continue
        try:
            res = lab.exec(host.name, command, timeout=15)
        except HostDown:
            continue
        if res.ok and res.stdout.strip():
            found[host.software] = adapter_for(host.software).parse_version(res.stdout)
    return found


def dns_query_log(lab: LiveLab) -> str:
    """The DNS server's query log as written (JSON lines); parse with parse_query_log."""
    server = lab.plan.hosts[lab.plan.dns_server]
    return _read_unless_down(lab, server.name, adapter_for(server.software, DnsAdapter).query_log)


def parse_query_log(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(item, dict):
            out.append(item)
    return out
