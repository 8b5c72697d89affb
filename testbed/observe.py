"""Looking into a running lab: logs, queues, mailboxes, the DNS query log.

The commands and parsers come from the adapters; this module only runs them
(through the fabric) and turns the outputs into typed results.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .adapters import mta_adapter
from .adapters.dns import QUERY_LOG
from .events import MailboxMessage, MailEvent, QueueEntry
from .fabric import Lab
from .plan import LabPlan


def mta_hosts(plan: LabPlan) -> list[str]:
    return [h.name for h in plan.hosts.values() if h.kind == "mta"]


def _parallel(fn, items: list[str]) -> dict[str, Any]:
    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(items))) as pool:
        return dict(zip(items, pool.map(fn, items)))


def queues(lab: Lab, hosts: list[str] | None = None) -> dict[str, list[QueueEntry] | None]:
    """Queue of every (running) MTA; None for a host that is down."""
    plan = lab.plan

    def one(host: str) -> list[QueueEntry] | None:
        adapter = mta_adapter(plan.hosts[host].software)
        res = lab.exec(host, adapter.queue_command(), timeout=30)
        if res.rc == 125 or (not res.ok and not lab.running(host)):
            return None
        return adapter.parse_queue(res.stdout)

    return _parallel(one, hosts if hosts is not None else mta_hosts(plan))


def log_sizes(lab: Lab, hosts: list[str]) -> dict[str, int]:
    plan = lab.plan

    def one(host: str) -> int:
        adapter = mta_adapter(plan.hosts[host].software)
        res = lab.exec(host, f"wc -c < {adapter.mail_log} 2>/dev/null || echo 0", timeout=10)
        try:
            return int(res.stdout.strip() or 0)
        except ValueError:
            return 0

    return _parallel(one, hosts)


def mail_logs(lab: Lab) -> dict[str, str]:
    plan = lab.plan
    return _parallel(lambda h: lab.read_file(h, mta_adapter(plan.hosts[h].software).mail_log), mta_hosts(plan))


def events_from_logs(plan: LabPlan, logs: dict[str, str]) -> list[MailEvent]:
    events: list[MailEvent] = []
    for host, text in logs.items():
        events += mta_adapter(plan.hosts[host].software).parse_log(text, host)
    return events


def mailboxes(lab: Lab) -> dict[str, list[MailboxMessage]]:
    """Every mailbox of the topology, read where its domain's mail is stored."""
    plan = lab.plan
    wanted: list[tuple[str, str, str]] = []  # (address, host, command)
    for host in plan.hosts.values():
        if host.kind != "mta":
            continue
        adapter = mta_adapter(host.software)
        for domain in host.roles.local_domains:
            for user in domain.users:
                cmd = adapter.mailbox_command(domain.name, user)
                if cmd:
                    wanted.append((f"{user}@{domain.name}", host.name, cmd))
    results = _parallel(lambda addr: _read_box(lab, wanted, addr), [w[0] for w in wanted])
    return results


def _read_box(lab: Lab, wanted: list[tuple[str, str, str]], address: str) -> list[MailboxMessage]:
    _, host, cmd = next(w for w in wanted if w[0] == address)
    adapter = mta_adapter(lab.plan.hosts[host].software)
    return adapter.parse_mailbox(lab.exec(host, cmd, timeout=30).stdout)


def dns_queries(lab: Lab) -> list[dict[str, Any]]:
    text = lab.read_file(lab.plan.dns_server, QUERY_LOG)
    return parse_query_log(text)


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
