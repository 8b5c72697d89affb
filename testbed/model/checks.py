"""Cross-reference checks: everything the schema cannot see (names, families, reachability)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator
from typing import Any

from .schema import (
    FAMILIES_OF,
    ClientExpect,
    DistributionExpect,
    DsnExpect,
    ClientStep,
    FaultStep,
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
from .hints import did_you_mean

# --- cross-reference checks ------------------------------------------------

Loc = tuple[str | int, ...]


def check_references(top: Topology) -> list[tuple[Loc, str]]:
    """Everything the schema cannot see: names, families, reachability."""
    out: list[tuple[Loc, str]] = []
    out += _check_hosts(top)
    out += _check_addresses(top)
    out += _check_extra_addresses(top)
    out += _check_dns_names(top)
    out += _check_domains(top)
    out += _check_dns(top)
    out += _check_dns_rules(top)
    out += _check_scenario(top)
    out += _check_clients(top)
    out += _check_faults(top)
    out += _check_gai_conf(top)
    out += _check_expectations(top)
    out += _check_advertisements(top)
    # A step of a sweep is checked once per value: report each of its problems once.
    return list(dict.fromkeys(out))


def step_locations(top: Topology) -> list[tuple[Loc, Any]]:
    """Each step as it runs (sweeps expanded) with where the user wrote it."""
    out: list[tuple[Loc, Any]] = []
    for step, origin in zip(top.steps(), top.step_origins()):
        loc: Loc = ("scenario", origin[0]) if len(origin) == 1 else ("scenario", origin[0], "sweep", "steps", origin[1])
        out.append((loc, step))
    return out


def _one_of(names: Iterable[str]) -> str:
    names = sorted(names)
    return "one of: " + ", ".join(names) if names else "one, but the topology defines none"


def _unknown(what: str, value: str, names: Iterable[str]) -> str:
    """E.g. "unknown segment 'v7net', expected one of: core, v6net (did you mean 'v6net'?)"."""
    names = list(names)
    return f"unknown {what} {value!r}, expected {_one_of(names)}{did_you_mean(value, names)}"


def _check_hosts(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    used_ids: dict[tuple[str, int], str] = {}
    for name, host in top.hosts.items():
        loc: Loc = ("hosts", name)
        allowed = SOFTWARE[host.kind]
        if host.software and host.software not in allowed:
            out.append((loc + ("software",), f"{host.kind} hosts run {_one_of(allowed)}"
                                             + did_you_mean(host.software, allowed)))
        if host.kind == "router":
            if host.segment:
                out.append((loc + ("segment",), "a router lists its networks under 'segments'"))
            segs = host.segments or []
            if len(segs) < 2:
                out.append((loc + ("segments",), "a router joins at least two segments"))
            for i, seg in enumerate(segs):
                if seg not in top.segments:
                    out.append((loc + ("segments", i), _unknown("segment", seg, top.segments)))
                elif seg in segs[:i]:
                    out.append((loc + ("segments", i), f"segment {seg!r} is listed twice"))
            if host.stack and host.stack != "dual":
                out.append((loc + ("stack",), "routers forward both families; leave 'stack' out"))
            member_segments = list(dict.fromkeys(segs))
        else:
            if host.segments:
                out.append((loc + ("segments",), "only routers join several segments; use 'segment'"))
            if not host.segment:
                out.append((loc + ("segment",), "required key is missing"))
                continue
            if host.segment not in top.segments:
                out.append((loc + ("segment",), _unknown("segment", host.segment, top.segments)))
                continue
            family = top.segments[host.segment].family
            stack = top.host_stack(name)
            if not FAMILIES_OF[stack] <= FAMILIES_OF[family]:
                out.append((loc + ("stack",), f"a {stack} host cannot sit on the {family} segment {host.segment!r}"))
            member_segments = [host.segment]
        if host.id is not None:
            for seg in member_segments:
                if seg not in top.segments:
                    continue
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


ROUTER_FIRST_ID = 2
HOST_FIRST_ID = 10
LAST_ID = 127


def _last_id(top: Topology, segment: str) -> int:
    """The highest host part a segment has room for: on a pinned /25, .127 is the broadcast address."""
    seg = top.segments.get(segment)
    if seg is not None and seg.subnet_v4 is not None and seg.subnet_v4.prefixlen == 25:
        return LAST_ID - 1
    return LAST_ID


def segments_of(top: Topology, host: str) -> list[str]:
    """The segments a host joins, each once."""
    h = top.hosts[host]
    return list(dict.fromkeys(h.segments or [])) if h.kind == "router" else [h.segment] if h.segment else []


def assign_host_ids(top: Topology) -> tuple[dict[tuple[str, str], int], list[tuple[Loc, str]]]:
    """(host, segment) -> host part, pinned or assigned in file order (routers from 2, others from 10).

    The planner numbers hosts with this; the problems say where a segment runs out of numbers.
    """
    ids: dict[tuple[str, str], int] = {}
    taken: dict[str, set[int]] = {s: set() for s in top.segments}
    problems: list[tuple[Loc, str]] = []
    for name, host in top.hosts.items():
        for seg, extra in host.addresses.items():
            taken.get(seg, set()).update(extra)  # kept free for the host's extra addresses
        for seg in segments_of(top, name):
            if host.id is not None and seg in taken:
                ids[(name, seg)] = host.id
                taken[seg].add(host.id)
                if host.id > _last_id(top, seg):
                    problems.append((("hosts", name, "id"), (
                        f"id {host.id} is the broadcast address of segment {seg}'s /25 subnet; "
                        f"use 2..{_last_id(top, seg)}")))
    full: set[str] = set()
    for name, host in top.hosts.items():
        for seg in segments_of(top, name):
            if (name, seg) in ids or seg not in taken:
                continue
            n = ROUTER_FIRST_ID if host.kind == "router" else HOST_FIRST_ID
            while n in taken[seg]:
                n += 1
            if n > _last_id(top, seg):
                if seg not in full:
                    full.add(seg)
                    problems.append((("hosts", name), (
                        f"segment {seg} has no host number left for {name} (routers get 2.., other hosts "
                        f"{HOST_FIRST_ID}..{_last_id(top, seg)}); pin ids or split the segment")))
                continue
            ids[(name, seg)] = n
            taken[seg].add(n)
    return ids, problems


def _check_dns_names(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    for name, owners in top.dns.names.items():
        for i, owner in enumerate(owners):
            if owner not in top.hosts:
                out.append((("dns", "names", name, i), _unknown("host", owner, top.hosts)))
    return out


def _check_extra_addresses(top: Topology) -> list[tuple[Loc, str]]:
    """Extra host numbers: on the host's own segments, and nobody else's number there."""
    out: list[tuple[Loc, str]] = []
    owner: dict[tuple[str, int], str] = {}
    for name, host in top.hosts.items():
        for seg in segments_of(top, name):
            if host.id is not None:
                owner[(seg, host.id)] = name
    for name, host in top.hosts.items():
        mine = set(segments_of(top, name))
        for seg, extra in host.addresses.items():
            loc: Loc = ("hosts", name, "addresses", seg)
            if seg not in mine:
                out.append((loc, f"{name} is not on segment {seg!r}; its segments: {', '.join(sorted(mine))}"))
                continue
            for i, n in enumerate(extra):
                other = owner.get((seg, n))
                if other is not None:
                    what = "its own id" if other == name else f"{other}'s number"
                    out.append((loc + (i,), f"{n} is {what} on segment {seg}"))
                owner[(seg, n)] = name
    return out


def _check_addresses(top: Topology) -> list[tuple[Loc, str]]:
    """Pinned subnets apart from each other, room in the pools, a host number for every host."""
    out: list[tuple[Loc, str]] = []
    pinned: list[tuple[str, str, ipaddress.IPv4Network | ipaddress.IPv6Network]] = [
        (name, key, net)
        for name, seg in top.segments.items()
        for key, net in (("subnet_v4", seg.subnet_v4), ("subnet_v6", seg.subnet_v6))
        if net is not None
    ]
    for i, (name, key, net) in enumerate(pinned):
        for other, okey, onet in pinned[:i]:
            if net.version == onet.version and net.overlaps(onet):
                out.append((("segments", name, key), f"{net} overlaps {onet}, the subnet of segment {other}"))
    need = sum(1 for seg in top.segments.values() if not (seg.subnet_v4 and seg.subnet_v6))
    free = _free_slots(top, [net for _, _, net in pinned], need)
    if free < need:
        out.append((("pools",), (
            f"the pools {top.pools.ipv4} and {top.pools.ipv6} have room for {free} segment(s) "
            f"besides the pinned subnets, and {need} need subnets from them; choose larger pools")))
    out += assign_host_ids(top)[1]
    return out


def _free_slots(top: Topology, pinned: list[Any], need: int) -> int:
    """How many (/24, /64) slots of the pools are clear of the pinned subnets, counting up to ``need``.

    Slot i is the i-th /24 of the IPv4 pool and the i-th /64 (of the i-th /48
    when the pool is a /48 or larger) of the IPv6 pool; slot 0 is never used.
    """
    pool4, pool6 = top.pools.ipv4, top.pools.ipv6
    step6 = 48 if pool6.prefixlen <= 48 else 64
    slots = min(2 ** (24 - pool4.prefixlen), 2 ** (step6 - pool6.prefixlen))
    found = 0
    for i in range(1, slots):
        if found >= need:
            break
        net4 = ipaddress.ip_network((int(pool4.network_address) + (i << 8), 24))
        net6 = ipaddress.ip_network((int(pool6.network_address) + (i << (128 - step6)), 64))
        if not any(p.overlaps(net4 if p.version == 4 else net6) for p in pinned):
            found += 1
    return found


def _check_domains(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    stores = set(top.hosts_of_kind("mailstore"))
    mtas = set(top.hosts_of_kind("mta"))
    for dname, dom in top.domains.items():
        loc: Loc = ("domains", dname)
        if not isinstance(dname, str) or not FQDN_RE.fullmatch(dname):
            out.append((loc, "expected a domain name such as example.net"))
        for host in dom.mx:
            if host not in mtas:
                out.append((loc + ("mx", host), f"MX hosts must be mta hosts: {_unknown('mta host', host, mtas)}"))
        if dom.relay and dom.relay not in mtas:
            out.append((loc + ("relay",), _unknown("mta host", dom.relay, mtas)))
        if dom.mailbox_host and dom.mailbox_host not in mtas:
            out.append((loc + ("mailbox_host",), _unknown("mta host", dom.mailbox_host, mtas)))
        if dom.mailboxes and not dom.mx and not dom.mailbox_host:
            out.append((loc + ("mx",), "a domain with mailboxes needs an MX host"))
        if dom.mailstore and dom.mailstore not in stores:
            out.append((loc + ("mailstore",), _unknown("mailstore host", dom.mailstore, stores)))
        for i, user in enumerate(dom.mailboxes):
            if user in dom.mailboxes[:i]:
                out.append((loc + ("mailboxes", i), f"mailbox {user!r} is listed twice"))
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
        out.append((("dns", "server"), _unknown("dns host", top.dns.server, servers)))
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
    for loc, step in step_locations(top):
        if isinstance(step, DnsStep):
            for key in ("set", "add"):
                rules = getattr(step.dns, key)
                if rules is not None:
                    lists.append((loc + ("dns", key), rules))
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
    for loc, step in step_locations(top):
        if isinstance(step, SendStep):
            spec = step.send
            if spec.id in seen_ids:
                out.append((loc + ("send", "id"), f"message id {spec.id!r} is used twice"))
            seen_ids.add(spec.id)
            if spec.via not in mtas:
                out.append((loc + ("send", "via"), _unknown("mta host", spec.via, mtas)))
            if spec.client is None and len(clients) != 1:
                out.append((loc + ("send", "client"), f"name the sending client, {_one_of(clients)}"))
            elif spec.client is not None and spec.client not in clients:
                out.append((loc + ("send", "client"), _unknown("client host", spec.client, clients)))
        elif isinstance(step, StopStep | StartStep):
            host = step.stop if isinstance(step, StopStep) else step.start
            key = "stop" if isinstance(step, StopStep) else "start"
            if host not in top.hosts:
                out.append((loc + (key,), _unknown("host", host, top.hosts)))
        elif isinstance(step, StopServiceStep | StartServiceStep):
            key = "stop_service" if isinstance(step, StopServiceStep) else "start_service"
            host = getattr(step, key)
            services = {n for n, h in top.hosts.items() if h.kind in ("mta", "mailstore", "dns")}
            if host not in services:
                out.append((loc + (key,), _unknown("host with a service", host, services)))
        elif isinstance(step, FlushStep) and step.flush != "all":
            for j, host in enumerate(step.flush):
                if host not in mtas:
                    out.append((loc + ("flush", j), _unknown("mta host", host, mtas)))
    return out


def _check_expectations(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    messages = set(top.messages())
    client_steps = set(top.client_steps())
    hosts = set(top.hosts)
    for i, exp in enumerate(top.expect):
        loc: Loc = ("expect", i)
        for host in exp.when:
            if host not in hosts:
                out.append((loc + ("when", host), _unknown("host", host, hosts)))
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
            if exp.dns.step is not None and exp.dns.step not in client_steps:
                out.append((loc + ("dns", "step"), _unknown("client step", exp.dns.step, client_steps)))
        elif isinstance(exp, ClientExpect):
            out += _check_client_expectation(top, exp, loc + ("client",))
        elif isinstance(exp, DistributionExpect):
            out += _check_distribution(top, exp, loc + ("distribution",))
        elif isinstance(exp, DsnExpect):
            refs.append((loc + ("dsn", "for"), exp.dsn.for_))
            if exp.dsn.mailbox is not None:
                local, _, domain = exp.dsn.mailbox.partition("@")
                if domain not in top.domains or local not in top.domains[domain].mailboxes:
                    out.append((loc + ("dsn", "mailbox"),
                                f"{exp.dsn.mailbox} is not a mailbox of the topology's domains"))
        for where, ref in refs:
            if ref is not None and ref not in messages:
                out.append((where, f"no step sends a message {ref!r}; expected {_one_of(messages)}"
                                   + did_you_mean(ref, messages)))
        for where, ref in hostrefs:
            if ref is not None and ref not in hosts:
                out.append((where, _unknown("host", ref, hosts)))
    return out


def _check_clients(top: Topology) -> list[tuple[Loc, str]]:
    """Client steps: a client host, software that can do the action, a server and a mailbox that exist."""
    from .. import adapters

    out: list[tuple[Loc, str]] = []
    clients = set(top.hosts_of_kind("client"))
    seen: set[str] = set()
    for loc, step in step_locations(top):
        if not isinstance(step, ClientStep):
            continue
        spec, loc = step.client, loc + ("client",)
        if spec.id in seen:
            out.append((loc + ("id",), f"client step id {spec.id!r} is used twice"))
        seen.add(spec.id)
        if spec.host not in clients:
            out.append((loc + ("host",), _unknown("client host", spec.host, clients)))
        elif (software := top.software_of(spec.host)) in SOFTWARE.get("client", ()):
            adapter = adapters.adapter_for(software, adapters.ClientAdapter)
            if spec.action not in adapter.actions:
                out.append((loc + ("action",), f"{software} cannot {spec.action}; it can: "
                                               + ", ".join(sorted(adapter.actions))))
            elif spec.the_protocol not in adapter.protocols:
                out.append((loc + ("protocol",), f"{software} does not speak {spec.the_protocol}; it speaks: "
                                                 + ", ".join(sorted(adapter.protocols))))
            if spec.family not in adapter.families:
                out.append((loc + ("family",), f"{software} has no option to use {spec.family} only; "
                                               "leave family out (any)"))
        if "." not in spec.server and spec.server not in top.hosts:
            out.append((loc + ("server",), _unknown("host", spec.server, top.hosts)
                        + " (or give a DNS name such as mail.example.net)"))
        if spec.action == "submit" and not spec.to:
            out.append((loc + ("to",), "a submission needs recipients ('to')"))
        if spec.action == "submit" and spec.the_protocol != "smtp":
            out.append((loc + ("protocol",), "submit over smtp"))
        if spec.action == "fetch":
            if spec.the_protocol == "smtp":
                out.append((loc + ("protocol",), "fetch over imap or pop3"))
            if spec.mailbox is None:
                out.append((loc + ("mailbox",), "say whose mailbox to fetch (mailbox: user@example.net)"))
            else:
                local, _, domain = spec.mailbox.partition("@")
                if domain not in top.domains or local not in top.domains[domain].mailboxes:
                    out.append((loc + ("mailbox",), f"{spec.mailbox} is not a mailbox of the topology's domains"))
    return out


def _check_faults(top: Topology) -> list[tuple[Loc, str]]:
    """A black hole is made at the routers of the host's segment, so the segment needs one."""
    out: list[tuple[Loc, str]] = []
    settings: list[tuple[Loc, str, dict[str, str]]] = [
        (("hosts", name, "faults"), name, dict(host.faults)) for name, host in top.hosts.items() if host.faults
    ]
    settings += [(loc + ("fault",), step.fault.host, step.fault.settings())
                 for loc, step in step_locations(top) if isinstance(step, FaultStep)]
    for loc, name, families in settings:
        host = top.hosts.get(name)
        if host is None:
            out.append((loc + ("host",), _unknown("host", name, top.hosts)))
            continue
        if host.kind == "router":
            out.append((loc, "faults are set on the host whose paths break, not on a router"))
            continue
        stack = FAMILIES_OF[top.host_stack(name)] if host.segment in top.segments else set()
        for family, mode in families.items():
            if family not in stack:
                out.append((loc + (family,), f"{name} has no {family} address"))
            elif mode == "blackhole" and not _routers_on(top, host.segment or "", family):
                out.append((loc + (family,), f"a black hole is made at the routers of segment {host.segment}, "
                                             f"which has no router: use 'refused', or add a router"))
    return out


def _check_gai_conf(top: Topology) -> list[tuple[Loc, str]]:
    """A prefix given twice in one kind of gai.conf line: glibc would keep both, in no defined order."""
    from ..gaiconf import KINDS, duplicates

    out: list[tuple[Loc, str]] = []
    for name, host in top.hosts.items():
        if host.gai_conf is None:
            continue
        for kind in KINDS:
            for i, message in duplicates(kind, [e.prefix for e in getattr(host.gai_conf, kind)]):
                out.append((("hosts", name, "gai_conf", kind, i, "prefix"), message))
    return out


def _routers_on(top: Topology, segment: str, family: str) -> list[str]:
    return [n for n, h in top.hosts.items()
            if h.kind == "router" and segment in (h.segments or []) and family in FAMILIES_OF[top.segments[segment].family]]


def _check_distribution(top: Topology, exp: DistributionExpect, loc: Loc) -> list[tuple[Loc, str]]:
    import fnmatch

    check = exp.distribution
    out: list[tuple[Loc, str]] = []
    if check.steps is not None:
        steps = top.client_steps()
        if not any(fnmatch.fnmatchcase(sid, check.steps) for sid in steps):
            out.append((loc + ("steps",), _unknown("client step", check.steps, steps)))
    if check.messages is not None:
        messages = top.messages()
        if not any(fnmatch.fnmatchcase(m, check.messages) for m in messages):
            out.append((loc + ("messages",), f"no step sends a message matching {check.messages!r}; expected "
                                             f"{_one_of(messages)}"))
    for i, host in enumerate(check.servers):
        if host not in top.hosts:
            out.append((loc + ("servers", i), _unknown("host", host, top.hosts)))
    servers = set(check.servers)
    if check.all_to is not None and check.all_to not in servers:
        out.append((loc + ("all_to",), f"{check.all_to!r} is not one of the servers counted ({', '.join(check.servers)})"))
    for host in check.share:
        if host not in servers:
            out.append((loc + ("share", host), f"{host!r} is not one of the servers counted ({', '.join(check.servers)})"))
    return out


def _check_client_expectation(top: Topology, exp: ClientExpect, loc: Loc) -> list[tuple[Loc, str]]:
    import fnmatch

    check = exp.client
    steps = top.client_steps()
    matched = [s for sid, s in steps.items() if fnmatch.fnmatchcase(sid, check.step)]
    if not matched:
        return [(loc + ("step",), _unknown("client step", check.step, steps))]
    out: list[tuple[Loc, str]] = []
    for key, values in check.labels.items():
        if not any(str(s.labels.get(key)) in map(str, values) for s in matched):
            out.append((loc + ("labels", key), f"no client step matching {check.step!r} has {key} in {values}"))
    if check.address is not None and "." not in check.address and ":" not in check.address \
            and check.address not in top.hosts:
        out.append((loc + ("address",), _unknown("host", check.address, top.hosts)))
    return out


def _check_advertisements(top: Topology) -> list[tuple[Loc, str]]:
    """Router advertisements, temporary addresses and per-host relay permission."""
    out: list[tuple[Loc, str]] = []
    for seg_name, seg in top.segments.items():
        if not seg.advertise:
            continue
        loc: Loc = ("segments", seg_name, "advertise")
        if "ipv6" not in FAMILIES_OF[seg.family]:
            out.append((loc, f"segment {seg_name!r} carries no IPv6: there is no prefix to advertise"))
        elif not _routers_on(top, seg_name, "ipv6"):
            out.append((loc, f"router advertisements come from a router on the segment, and {seg_name!r} has none"))
    for name, host in top.hosts.items():
        if host.privacy_addresses:
            loc = ("hosts", name, "privacy_addresses")
            if host.kind == "router":
                out.append((loc, "a router forwards and ignores router advertisements: temporary addresses are for hosts"))
            elif host.segment in top.segments:
                if "ipv6" not in FAMILIES_OF[top.host_stack(name)]:
                    out.append((loc, f"{name} has no IPv6 address"))
                elif not top.segments[host.segment].advertise:
                    out.append((loc, f"temporary addresses come from router advertisements: "
                                     f"set segments.{host.segment}.advertise"))
        if host.relay_from is not None:
            out += _check_relay_from(top, name, host)
    return out


def _check_relay_from(top: Topology, name: str, host: Any) -> list[tuple[Loc, str]]:
    loc: Loc = ("hosts", name, "relay_from")
    if host.kind != "mta":
        return [(loc, "only an mta host relays mail")]
    relays = {d.relay for d in top.domains.values() if d.relay}
    out: list[tuple[Loc, str]] = []
    if name not in relays:
        out.append((loc, f"{name} is no domain's relay (set domains.DOMAIN.relay: {name}), so nobody relays through it"))
    rf = host.relay_from
    if not rf.hosts and not rf.segments:
        out.append((loc, "name at least one host or segment that may relay"))
    for i, other in enumerate(rf.hosts):
        if other not in top.hosts:
            out.append((loc + ("hosts", i), _unknown("host", other, top.hosts)))
        elif top.hosts[other].kind == "router":
            out.append((loc + ("hosts", i), f"{other} is a router with an address on every segment: name a segment"))
        elif other in rf.hosts[:i]:
            out.append((loc + ("hosts", i), f"host {other!r} is listed twice"))
    for i, seg in enumerate(rf.segments):
        if seg not in top.segments:
            out.append((loc + ("segments", i), _unknown("segment", seg, top.segments)))
        elif seg in rf.segments[:i]:
            out.append((loc + ("segments", i), f"segment {seg!r} is listed twice"))
    return out
