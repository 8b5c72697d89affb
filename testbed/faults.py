"""Broken paths without netem: a host's address black-holed at its routers, or its TCP ports refused.

The kernel here has no netem, so the study's "broken IPv6 path" (slide 23) is
made with what it has, per host and per family:

* ``blackhole``: every router on the host's segment gets a ``blackhole`` route
  for the host's address (``ip -6 route replace blackhole ADDR/128``), more
  specific than the segment's connected route. Packets to the host through a
  router are dropped without an answer, so a client's connection attempt
  times out, as behind a broken tunnel or firewall. Hosts on the server's own
  segment are not routed and still reach it.
* ``refused``: the host answers every TCP SYN of that family with a reset
  (``REJECT --reject-with tcp-reset`` in a chain of its own): on the wire the
  same as a service listening on the other family only.
* ``none``: both undone.

Pure: the commands are returned; the scenario runs them, and tb-init runs the
topology's own settings (``Host.faults``) at every container start through
``net.sh``. Settings made by a ``fault`` step last until the next ``fault``
step or until the affected container restarts.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .plan import LabPlan

CHAIN = "TESTBED-FAULT"
_IP = {"ipv4": "ip -4", "ipv6": "ip -6"}
_TABLES = {"ipv4": "iptables -w", "ipv6": "ip6tables -w"}
_HOST_BITS = {"ipv4": 32, "ipv6": 128}


def routers_of(plan: LabPlan, host: str, family: str) -> list[str]:
    """The routers that forward to ``host`` over ``family``: those on one of its segments."""
    segments = {i.segment for i in plan.hosts[host].interfaces if i.address(family) is not None}
    return [
        r.name
        for r in plan.hosts.values()
        if r.kind == "router" and any(i.segment in segments and i.address(family) is not None for i in r.interfaces)
    ]


def _router_lines(address: str, family: str, mode: str) -> list[str]:
    route = f"{address}/{_HOST_BITS[family]}"
    ip = _IP[family]
    if mode == "blackhole":
        return [f"{ip} route replace blackhole {route}"]
    # Gone whether or not it was there; fails only if a blackhole route stays.
    return [f"{ip} route del blackhole {route} 2>/dev/null; ! {ip} route show {route} | grep -q blackhole"]


def _host_lines(family: str, mode: str) -> list[str]:
    tables = _TABLES[family]
    lines = [
        f"{tables} -N {CHAIN} 2>/dev/null || {tables} -F {CHAIN}",
        f"{tables} -C INPUT -j {CHAIN} 2>/dev/null || {tables} -I INPUT -j {CHAIN}",
    ]
    if mode == "refused":
        lines.append(f"{tables} -A {CHAIN} -p tcp --syn -j REJECT --reject-with tcp-reset")
    return lines


def fault_commands(plan: LabPlan, host: str, settings: Mapping[str, str]) -> list[tuple[str, str]]:
    """(container host, shell command) pairs that make ``host``'s paths what ``settings`` say.

    Each family's setting replaces the one before: a black hole is lifted when the
    family becomes refused, and the other way round.
    """
    out: list[tuple[str, str]] = []
    target = plan.hosts[host]
    for family, mode in settings.items():
        for address in target.addresses(family):
            for router in routers_of(plan, host, family):
                out += [(router, line) for line in _router_lines(str(address), family, mode)]
        out += [(host, line) for line in _host_lines(family, mode)]
    return out


def boot_lines(plan: LabPlan, name: str) -> list[str]:
    """The lines of ``name``'s net.sh that set the topology's own faults (routers and hosts alike)."""
    lines: list[str] = []
    for host, settings in plan.initial_faults.items():
        for target, line in fault_commands(plan, host, settings):
            if target == name:
                lines.append(line)
    return lines


def describe(host: str, settings: Mapping[str, str]) -> str:
    words = {"blackhole": "black-holed at its routers", "refused": "refused", "none": "working"}
    return f"{host}: " + ", ".join(f"{family} {words[mode]}" for family, mode in settings.items())
