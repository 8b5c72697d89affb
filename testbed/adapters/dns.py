"""The lab DNS server (testbed.dnsserver on dnslib) as a host."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

from ..templating import render
from .base import LOG_DIR, SERVICE_SCRIPT, DnsAdapter, RenderedFile

if TYPE_CHECKING:
    from ..plan import HostPlan, LabPlan

QUERY_LOG = f"{LOG_DIR}/dns-queries.jsonl"
CONTROL_SOCKET = "/run/testbed-dns.sock"
CONFIG = "/etc/testbed/dns.json"


class DnsServerAdapter(DnsAdapter):
    software = "testbed-dns"
    image = "dns"
    query_log = QUERY_LOG

    def files(self, host: HostPlan, plan: LabPlan) -> list[RenderedFile]:
        return [
            RenderedFile(CONFIG, json.dumps(plan.dns_config(), indent=2) + "\n"),
            RenderedFile(SERVICE_SCRIPT, render("dns/service.j2", host=host), 0o755),
        ]

    def ready_command(self, host: HostPlan) -> str:
        # Sockets, not the log line: after a service restart the old line is still there.
        return "ss -Hlun 'sport = :53' | grep -q . && ss -Hltn 'sport = :53' | grep -q LISTEN"

    def control_command(self, verb: str, rules: list[dict[str, Any]] | None = None) -> str:
        return control_command(verb, rules)


def control_command(verb: str, rules: list[dict[str, Any]] | None = None) -> str:
    """Shell command, run in the DNS container, that lists or changes the live rules."""
    ctl = f"python3 -m testbed.dnsserver.ctl --control {CONTROL_SOCKET}"
    if rules is None:
        return f"{ctl} {verb}"
    # base64: the rules pass through `sh -c` untouched, whatever quotes they hold.
    payload = base64.b64encode(json.dumps(rules).encode()).decode()
    return f"echo {payload} | base64 -d | {ctl} {verb} -"
