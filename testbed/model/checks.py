"""Cross-reference checks: everything the schema cannot see (names, families, reachability)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from .schema import (
    FAMILIES_OF,
    FQDN_RE,
    SELF_STORING,
    SOFTWARE,
    DnsExpect,
    DnsStep,
    FlushStep,
    LogExpect,
    MailboxExpect,
    MessageExpect,
    QueueExpect,
    SendStep,
    StartServiceStep,
    StartStep,
    StopServiceStep,
    StopStep,
    Topology,
)

# --- cross-reference checks ------------------------------------------------

Loc = tuple[str | int, ...]


def check_references(top: Topology) -> list[tuple[Loc, str]]:
    """Everything the schema cannot see: names, families, reachability."""
    out: list[tuple[Loc, str]] = []
    out += _check_hosts(top)
    out += _check_domains(top)
    out += _check_dns(top)
    out += _check_dns_rules(top)
    out += _check_scenario(top)
    out += _check_expectations(top)
    return out


def _one_of(names: Iterable[str]) -> str:
    names = sorted(names)
    return "one of: " + ", ".join(names) if names else "one, but the topology defines none"


def _check_hosts(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    used_ids: dict[tuple[str, int], str] = {}
    for name, host in top.hosts.items():
        loc: Loc = ("hosts", name)
        allowed = SOFTWARE[host.kind]
        if host.software and host.software not in allowed:
            out.append((loc + ("software",), f"{host.kind} hosts run {_one_of(allowed)}"))
        if host.kind == "router":
            if host.segment:
                out.append((loc + ("segment",), "a router lists its networks under 'segments'"))
            segs = host.segments or []
            if len(segs) < 2:
                out.append((loc + ("segments",), "a router joins at least two segments"))
            for i, seg in enumerate(segs):
                if seg not in top.segments:
                    out.append((loc + ("segments", i), f"unknown segment {seg!r}, expected {_one_of(top.segments)}"))
            if host.stack and host.stack != "dual":
                out.append((loc + ("stack",), "routers forward both families; leave 'stack' out"))
            member_segments = segs
        else:
            if host.segments:
                out.append((loc + ("segments",), "only routers join several segments; use 'segment'"))
            if not host.segment:
                out.append((loc + ("segment",), "required key is missing"))
                continue
            if host.segment not in top.segments:
                out.append((loc + ("segment",), f"unknown segment {host.segment!r}, expected {_one_of(top.segments)}"))
                continue
            family = top.segments[host.segment].family
            stack = top.host_stack(name)
            if not FAMILIES_OF[stack] <= FAMILIES_OF[family]:
                out.append((loc + ("stack",), f"a {stack} host cannot sit on the {family} segment {host.segment!r}"))
            member_segments = [host.segment]
        if host.id is not None:
            for seg in member_segments:
                other = used_ids.get((seg, host.id))
                if other:
                    out.append((loc + ("id",), f"id {host.id} is already used by {other} on segment {seg}"))
                used_ids[(seg, host.id)] = name
    fqdns: dict[str, str] = {}
    for name in top.hosts:
        fqdn = top.fqdn_of(name)
        if fqdn in fqdns:
            out.append((("hosts", name, "fqdn"), f"{fqdn} is already the name of {fqdns[fqdn]}"))
        fqdns[fqdn] = name
    for seg_name, seg in top.segments.items():
        if seg.subnet_v4 and seg.family == "ipv6":
            pass  # allowed: engines without IPv6-only networks need a placeholder IPv4 subnet
        if seg.subnet_v6 and seg.family == "ipv4":
            out.append((("segments", seg_name, "subnet_v6"), "an ipv4 segment has no IPv6 subnet"))
    return out


def _check_domains(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    stores = set(top.hosts_of_kind("mailstore"))
    mtas = set(top.hosts_of_kind("mta"))
    for dname, dom in top.domains.items():
        loc: Loc = ("domains", dname)
        if not FQDN_RE.match(dname):
            out.append((loc, "expected a domain name such as example.net"))
        for host in dom.mx:
            if host not in mtas:
                out.append((loc + ("mx", host), f"MX hosts must be mta hosts, expected {_one_of(mtas)}"))
        if dom.relay and dom.relay not in mtas:
            out.append((loc + ("relay",), f"unknown mta host {dom.relay!r}, expected {_one_of(mtas)}"))
        if dom.mailbox_host and dom.mailbox_host not in mtas:
            out.append((loc + ("mailbox_host",), f"expected an mta host, {_one_of(mtas)}"))
        if dom.mailboxes and not dom.mx and not dom.mailbox_host:
            out.append((loc + ("mx",), "a domain with mailboxes needs an MX host"))
        if dom.mailstore and dom.mailstore not in stores:
            out.append((loc + ("mailstore",), f"expected a mailstore host, {_one_of(stores)}"))
        final = top.mailbox_host(dname)
        if dom.mailboxes and not dom.mailstore and final in mtas and top.software_of(final) not in SELF_STORING:
            out.append((
                loc + ("mailstore",),
                f"{final} runs {top.software_of(final)}, which delivers only to a mailstore: "
                f"add a Dovecot host and name it here, {_one_of(stores)}",
            ))
    return out


def _check_dns(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    servers = top.hosts_of_kind("dns")
    server = top.dns_server()
    if top.dns.server and top.dns.server not in servers:
        out.append((("dns", "server"), f"expected a dns host, {_one_of(servers)}"))
        return out
    if server is None:
        if not servers:
            out.append((("hosts",), "the lab needs one host of kind dns"))
        else:
            out.append((("dns", "server"), f"several dns hosts; name the lab's server, {_one_of(servers)}"))
        return out
    reach = reachable_segments(top)
    server_seg = top.hosts[server].segment
    server_families = FAMILIES_OF[top.host_stack(server)]
    for name, host in top.hosts.items():
        if host.kind == "router" or name == server or host.segment not in top.segments:
            continue
        families = FAMILIES_OF[top.host_stack(name)] & server_families
        if not any(server_seg in reach[f].get(host.segment, set()) for f in families):
            out.append(
                (("hosts", name), f"cannot reach the DNS server {server} over any of its address families")
            )
    return out


def _check_dns_rules(top: Topology) -> list[tuple[Loc, str]]:
    """Rules are checked by the DNS server's own parser, so the file fails as the server would."""
    from ..dnsserver.rules import parse_rules

    lists: list[tuple[Loc, list[dict[str, Any]]]] = [(("dns", "rules"), top.dns.rules)]
    for i, step in enumerate(top.scenario):
        if isinstance(step, DnsStep):
            for key in ("set", "add"):
                rules = getattr(step.dns, key)
                if rules is not None:
                    lists.append((("scenario", i, "dns", key), rules))
    out: list[tuple[Loc, str]] = []
    for loc, rules in lists:
        _, errors = parse_rules([_client_names_as_family(r, top) for r in rules], path="")
        for err in errors:
            out.append((loc + _parse_rule_path(err.path), err.message))
    return out


def _client_names_as_family(rule: Any, top: Topology) -> Any:
    """A lab host name is a valid rule client (the planner turns it into addresses)."""
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), dict) or "client" not in rule["match"]:
        return rule
    clients = rule["match"]["client"]
    items = clients if isinstance(clients, list) else [clients]
    items = ["ipv4" if isinstance(c, str) and c in top.hosts else c for c in items]
    return {**rule, "match": {**rule["match"], "client": items}}


def _parse_rule_path(path: str) -> Loc:
    """'[2].match.client' -> (2, 'match', 'client')."""
    loc: list[str | int] = []
    for part in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path):
        loc.append(int(part[0]) if part[0] else part[1])
    return tuple(loc)


def reachable_segments(top: Topology) -> dict[str, dict[str, set[str]]]:
    """Per family: segment -> segments reachable through routers carrying that family."""
    result: dict[str, dict[str, set[str]]] = {}
    for family in ("ipv4", "ipv6"):
        carries = {s for s, seg in top.segments.items() if family in FAMILIES_OF[seg.family]}
        links: dict[str, set[str]] = {s: set() for s in carries}
        for host in top.hosts.values():
            if host.kind != "router":
                continue
            joined = [s for s in host.segments or [] if s in carries]
            for a in joined:
                links[a].update(joined)
        reach: dict[str, set[str]] = {}
        for start in carries:
            seen = {start}
            todo = [start]
            while todo:
                for nxt in links[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            reach[start] = seen
        result[family] = reach
    return result


def _check_scenario(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    mtas = set(top.hosts_of_kind("mta"))
    clients = set(top.hosts_of_kind("client"))
    seen_ids: set[str] = set()
    for i, step in enumerate(top.scenario):
        loc: Loc = ("scenario", i)
        if isinstance(step, SendStep):
            spec = step.send
            if spec.id in seen_ids:
                out.append((loc + ("send", "id"), f"message id {spec.id!r} is used twice"))
            seen_ids.add(spec.id)
            if spec.via not in mtas:
                out.append((loc + ("send", "via"), f"expected an mta host, {_one_of(mtas)}"))
            if spec.client is None and len(clients) != 1:
                out.append((loc + ("send", "client"), f"name the sending client, {_one_of(clients)}"))
            elif spec.client is not None and spec.client not in clients:
                out.append((loc + ("send", "client"), f"expected a client host, {_one_of(clients)}"))
        elif isinstance(step, StopStep | StartStep):
            host = step.stop if isinstance(step, StopStep) else step.start
            key = "stop" if isinstance(step, StopStep) else "start"
            if host not in top.hosts:
                out.append((loc + (key,), f"unknown host {host!r}, expected {_one_of(top.hosts)}"))
        elif isinstance(step, StopServiceStep | StartServiceStep):
            key = "stop_service" if isinstance(step, StopServiceStep) else "start_service"
            host = getattr(step, key)
            services = {n for n, h in top.hosts.items() if h.kind in ("mta", "mailstore", "dns")}
            if host not in services:
                out.append((loc + (key,), f"expected a host with a service, {_one_of(services)}"))
        elif isinstance(step, FlushStep) and step.flush != "all":
            for j, host in enumerate(step.flush):
                if host not in mtas:
                    out.append((loc + ("flush", j), f"expected an mta host, {_one_of(mtas)}"))
    return out


def _check_expectations(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    messages = set(top.messages())
    hosts = set(top.hosts)
    for i, exp in enumerate(top.expect):
        loc: Loc = ("expect", i)
        for host in exp.when:
            if host not in hosts:
                out.append((loc + ("when", host), f"unknown host, expected {_one_of(hosts)}"))
        refs: list[tuple[Loc, str | None]] = []
        hostrefs: list[tuple[Loc, str | None]] = []
        if isinstance(exp, MessageExpect):
            refs.append((loc + ("message",), exp.message))
            hostrefs += [(loc + ("path", j), h) for j, h in enumerate(exp.path or [])]
            hostrefs += [(loc + ("queued_at", j), h) for j, h in enumerate(exp.queued_at or [])]
            hostrefs.append((loc + ("dsn_generated_at",), exp.dsn_generated_at))
        elif isinstance(exp, MailboxExpect):
            refs += [(loc + ("mailbox", k), getattr(exp.mailbox, k)) for k in ("dsn_for", "has_message", "absent_message")]
            address = exp.mailbox.address
            local, _, domain = address.partition("@")
            if domain not in top.domains or local not in top.domains[domain].mailboxes:
                out.append((loc + ("mailbox", "address"), f"{address} is not a mailbox of the topology's domains"))
        elif isinstance(exp, QueueExpect):
            hostrefs.append((loc + ("queue", "host"), exp.queue.host))
            refs.append((loc + ("queue", "message"), exp.queue.message))
        elif isinstance(exp, LogExpect):
            hostrefs.append((loc + ("log", "host"), exp.log.host))
        elif isinstance(exp, DnsExpect):
            hostrefs.append((loc + ("dns", "client"), exp.dns.client))
        for where, ref in refs:
            if ref is not None and ref not in messages:
                out.append((where, f"no step sends a message {ref!r}; expected {_one_of(messages)}"))
        for where, ref in hostrefs:
            if ref is not None and ref not in hosts:
                out.append((where, f"unknown host {ref!r}, expected {_one_of(hosts)}"))
    return out
