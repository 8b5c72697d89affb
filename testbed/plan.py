"""From a validated topology to a concrete lab: addresses, routes, DNS data, roles.

Pure: the engine's capabilities and the subnets already in use on the machine
are inputs, so the same topology always plans the same way for the same inputs.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from .adapters import MailstoreAdapter, adapter_for, mta_adapter
from .errors import PreflightError
from .mailbox import imap_dump_command, mailbox_password
from .model import (
    FAMILIES_OF,
    ClientSpec,
    Expect,
    GaiConf,
    SendSpec,
    Step,
    Timing,
    Topology,
    assign_host_ids,
    reachable_segments,
    segments_of,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

LABEL_RUN = "testbed.run"
LABEL_LAB = "testbed.lab"
LABEL_VARIANT = "testbed.variant"
LABEL_HOST = "testbed.host"
LABEL_KIND = "testbed.kind"
#: The endpoint driver option for per-interface sysctls (API 1.46, moby#47686).
ENDPOINT_SYSCTLS = "com.docker.network.endpoint.sysctls"
LABEL_ADDRESSES = "testbed.addresses"  # the host's lab addresses, for `testbed dns` rules by host name
#: The lab's short name for people (`testbed shell mx-routing-1 relay`): unique on the engine, given at creation.
LABEL_HANDLE = "testbed.handle"
LABEL_RUN_DIR = "testbed.run_dir"  # absolute: where plan.json is, for commands that work in a live lab
LABEL_EXPIRES = "testbed.expires"  # seconds since the epoch (`testbed up --ttl`); absent: never
LABEL_EXERCISE = "testbed.exercise"  # absolute path of the exercise.yaml the lab was brought up from


def handle_base(name: str, labels: Mapping[str, str]) -> str:
    """What a lab's handle starts with: its exercise's name (the directory of exercise.yaml), else its topology's."""
    exercise = labels.get(LABEL_EXERCISE)
    return PurePath(exercise).parent.name if exercise else name


def next_handle(topology: str, taken: Iterable[str]) -> str:
    """``<topology>-<n>`` with the smallest n no lab on the engine holds (a handle people type)."""
    used = set(taken)
    n = 1
    while f"{topology}-{n}" in used:
        n += 1
    return f"{topology}-{n}"


@dataclass(frozen=True)
class EngineCaps:
    """What the Docker engine can do, from its API version."""

    api_version: tuple[int, int]
    #: False only to show what the engine does without the lab's trusted bridges
    #: (`testbed doctor`, tests); labs always trust them where the engine can.
    trust_lab_bridges: bool = True

    @property
    def ipv6_only_networks(self) -> bool:
        # EnableIPv4=false: API 1.48 (engine 28.0). Older engines ignore it silently.
        return self.api_version >= (1, 48)

    @property
    def multi_network_create(self) -> bool:
        # Several networks in one create call: API 1.44 (moby#45906).
        return self.api_version >= (1, 44)

    @property
    def direct_access_filter(self) -> bool:
        """The engine drops packets addressed to a container unless they arrive on its bridge.

        Engine 28.2 (API 1.50, moby#49829) adds, per container address, a raw-table
        ``PREROUTING -d ADDR ! -i BRIDGE -j DROP``. With br_netfilter, a frame a
        lab router forwards onto another segment is bridged through that rule on
        the *sender's* bridge and dropped. (28.0 and 28.1 had the rule only for
        published ports, which labs never have.)
        """
        return self.api_version >= (1, 50)

    @property
    def trusted_host_interfaces(self) -> bool:
        # com.docker.network.bridge.trusted_host_interfaces: API 1.50 (engine 28.2, moby#49832).
        return self.trust_lab_bridges and self.api_version >= (1, 50)

    @property
    def endpoint_sysctls(self) -> bool:
        """Per-interface sysctls as the endpoint's driver option (API 1.46, engine 27.0, moby#47686).

        ``com.docker.network.endpoint.sysctls`` with ``IFNAME`` in the names,
        applied when the engine configures that interface. Older engines (20.10,
        26.1) take them in ``--sysctl`` as ``net.ipv6.conf.eth0.*``: the interface
        of the first network exists before the runtime applies them (the SetKey
        prestart hook; 26.0 dropped it and 26.0.1 brought it back, moby#47646),
        and ``default.*`` reaches only interfaces created later.
        """
        return self.api_version >= (1, 46)

    @classmethod
    def parse(cls, version: str) -> EngineCaps:
        major, minor = version.split(".")[:2]
        return cls((int(major), int(minor)))


@dataclass(frozen=True)
class AddressPool:
    """One IPAM pool of a segment's Docker network."""

    subnet: IPNetwork
    gateway: IPAddress
    ip_range: IPNetwork


@dataclass(frozen=True)
class SegmentPlan:
    name: str
    family: str
    network: str  # Docker network name
    bridge: str  # Linux bridge name (at most 15 characters)
    subnet_v4: ipaddress.IPv4Network | None  # Docker's IPv4 subnet (maybe only a placeholder)
    subnet_v6: ipaddress.IPv6Network | None
    #: True when the engine needs an IPv4 subnet on an IPv6-only segment; hosts drop it.
    placeholder_v4: bool = False
    #: A router of the segment sends router advertisements for its IPv6 prefix.
    advertise: bool = False

    @property
    def carries(self) -> frozenset[str]:
        return frozenset(FAMILIES_OF[self.family])

    @property
    def subnets(self) -> list[IPNetwork]:
        """The subnets the engine's network gets (an IPv4 placeholder included)."""
        return [n for n in (self.subnet_v4, self.subnet_v6) if n is not None]

    def gateway(self, family: str) -> IPAddress | None:
        """The Docker bridge's own address: the machine, never a lab host."""
        net = self.subnet_v4 if family == "ipv4" else self.subnet_v6
        return net[1] if net is not None else None

    def address_pools(self) -> list[AddressPool]:
        """The network's IPAM pools: fixed addresses in the lower part, the engine's own picks above."""
        pools = []
        if self.subnet_v4 is not None:
            upper = list(self.subnet_v4.subnets(prefixlen_diff=1))[1]
            pools.append(AddressPool(self.subnet_v4, self.subnet_v4[1], upper))
        if self.subnet_v6 is not None:
            # A small range: engine 20.10's allocator fails on ranges of 2^63 addresses.
            dynamic6 = ipaddress.ip_network(f"{self.subnet_v6[0xFFFF0000]}/112")
            pools.append(AddressPool(self.subnet_v6, self.subnet_v6[1], dynamic6))
        return pools

    def lab_subnet(self, family: str) -> IPNetwork | None:
        if family not in self.carries:
            return None
        return self.subnet_v4 if family == "ipv4" else self.subnet_v6


def network_options(segments: Mapping[str, SegmentPlan], segment: str, caps: EngineCaps) -> dict[str, str]:
    """The bridge driver options of one segment's Docker network.

    No NAT on any engine. Where the engine filters direct access to containers,
    the lab's *other* bridges are its trusted interfaces: a packet a lab router
    forwards arrives on one of them, and only those are let through. Everything
    else (the host's uplink, other users' bridges) keeps the engine's protection,
    which stays on machine-wide.
    """
    seg = segments[segment]
    options = {
        "com.docker.network.bridge.name": seg.bridge,
        "com.docker.network.bridge.enable_ip_masquerade": "false",  # no NAT, ever
    }
    if seg.subnet_v4 is None:
        options["com.docker.network.enable_ipv4"] = "false"  # honoured from API 1.48
    others = [s.bridge for name, s in sorted(segments.items()) if name != segment]
    if caps.trusted_host_interfaces and others:
        options["com.docker.network.bridge.trusted_host_interfaces"] = ":".join(others)
    return options


@dataclass(frozen=True)
class Interface:
    segment: str
    ipv4: ipaddress.IPv4Address | None  # used by the lab (None: this family is off here)
    ipv6: ipaddress.IPv6Address | None
    docker_ipv4: ipaddress.IPv4Address | None  # requested from Docker (may be flushed)
    docker_ipv6: ipaddress.IPv6Address | None
    #: Extra addresses of the host here (``hosts.X.addresses``), added by net.sh with the subnet's prefix length.
    extra: tuple[ipaddress.IPv4Interface | ipaddress.IPv6Interface, ...] = ()

    def address(self, family: str) -> IPAddress | None:
        return self.ipv4 if family == "ipv4" else self.ipv6

    def extra_addresses(self, family: str) -> list[IPAddress]:
        return [i.ip for i in self.extra if (i.version == 6) == (family == "ipv6")]


@dataclass(frozen=True)
class Route:
    family: str
    prefix: IPNetwork
    via: IPAddress


@dataclass(frozen=True)
class Advertisement:
    """A router's advertisement of one segment's prefix (radvd on the interface that holds ``address``)."""

    segment: str
    address: ipaddress.IPv6Address  # the router's own address on the segment
    prefix: ipaddress.IPv6Network


@dataclass(frozen=True)
class RoutedPath:
    """A path through a lab router that bring-up checks before the scenario relies on it."""

    host: str
    target: str
    family: str
    address: IPAddress
    via: IPAddress


@dataclass(frozen=True)
class LocalDomain:
    name: str
    users: tuple[str, ...]
    #: FQDN of the Dovecot host the final MX delivers to over LMTP (None: the MTA stores it).
    mailstore: str | None = None


@dataclass(frozen=True)
class MailRoles:
    #: Domains whose mail this host accepts as final MX (for a mailstore: whose mailboxes it holds).
    local_domains: tuple[LocalDomain, ...] = ()
    relay_domains: tuple[str, ...] = ()  # backup MX for these
    submission_for: tuple[str, ...] = ()  # outbound relay of these domains
    relay_networks: tuple[IPNetwork, ...] = ()  # clients allowed to relay through us


@dataclass(frozen=True)
class HostPlan:
    name: str
    kind: str
    software: str
    fqdn: str
    stack: str
    image: str  # image name (testbed/<image>:<suite>)
    suite: str  # the Debian suite of its image (the lab's, unless the host names another)
    container: str
    interfaces: tuple[Interface, ...]
    routes: tuple[Route, ...]
    nameservers: tuple[IPAddress, ...]
    sysctls: dict[str, str]
    roles: MailRoles = MailRoles()
    #: glibc's /etc/gai.conf, as the topology gives it (None: the image's own); render writes it.
    gai_conf: GaiConf | None = None
    #: Sysctls of the host's (only) interface, named with IFNAME (``net.ipv6.conf.IFNAME.accept_ra``).
    interface_sysctls: dict[str, str] = field(default_factory=dict)
    #: RFC 4941 temporary addresses from its segment's router advertisements.
    privacy_addresses: bool = False
    #: A router's router advertisements, one per advertised segment.
    advertisements: tuple[Advertisement, ...] = ()

    def engine_sysctls(self, caps: EngineCaps) -> dict[str, str]:
        """The container's ``--sysctl``: with the interface's own on engines without endpoint sysctls."""
        if caps.endpoint_sysctls or not self.interface_sysctls:
            return dict(self.sysctls)
        return {**self.sysctls, **{k.replace(".IFNAME.", ".eth0."): v for k, v in self.interface_sysctls.items()}}

    def endpoint_sysctls(self, caps: EngineCaps) -> str | None:
        """The first endpoint's ``com.docker.network.endpoint.sysctls`` (engines from API 1.46)."""
        if not caps.endpoint_sysctls or not self.interface_sysctls:
            return None
        return ",".join(f"{k}={v}" for k, v in self.interface_sysctls.items())

    @property
    def families(self) -> frozenset[str]:
        return frozenset(FAMILIES_OF[self.stack])

    def addresses(self, family: str | None = None) -> list[IPAddress]:
        """Every address of the host, the planned one of each interface first, then its extra ones."""
        fams = [family] if family else ["ipv4", "ipv6"]
        out: list[IPAddress] = []
        for f in fams:
            for i in self.interfaces:
                planned = i.address(f)
                out += ([planned] if planned is not None else []) + i.extra_addresses(f)
        return out


@dataclass(frozen=True)
class Record:
    name: str  # absolute, with trailing dot
    type: str
    data: str
    ttl: int


@dataclass(frozen=True)
class Zone:
    origin: str
    records: tuple[Record, ...]


@dataclass(frozen=True)
class MailboxReader:
    """Where and how one mailbox is read."""

    address: str
    host: str  # the container the command runs in
    command: str
    how: str  # "imap from client", "doveadm", "maildir"


@dataclass(frozen=True)
class LabPlan:
    run_id: str
    topology: Topology
    suite: str
    caps: EngineCaps
    segments: dict[str, SegmentPlan]
    hosts: dict[str, HostPlan]
    zones: tuple[Zone, ...]
    dns_server: str
    labels: dict[str, str] = field(default_factory=dict)
    #: How each mailbox of the topology is read after the scenario.
    mailboxes: tuple[MailboxReader, ...] = ()

    # What the later stages need of the topology; they read it here, never the topology itself.

    @property
    def name(self) -> str:
        return self.topology.name

    @property
    def variant(self) -> str:
        return self.topology.variant

    @property
    def title(self) -> str:
        return self.topology.title

    @property
    def study(self) -> str:
        return self.topology.study

    @property
    def variant_description(self) -> str:
        variant = self.topology.variants.get(self.topology.variant)
        return variant.description if variant else ""

    @property
    def timing(self) -> Timing:
        return self.topology.timing

    @property
    def scenario(self) -> list[Step]:
        """The steps as they run (sweeps expanded)."""
        return self.topology.steps()

    def client_steps(self) -> dict[str, ClientSpec]:
        return self.topology.client_steps()

    @property
    def initial_faults(self) -> dict[str, dict[str, str]]:
        """Broken paths the topology sets from the start: host -> family -> blackhole | refused."""
        return {name: dict(h.faults) for name, h in self.topology.hosts.items() if h.faults}

    @property
    def image_suites(self) -> dict[str, set[str]]:
        """suite -> the images the lab's hosts need from it."""
        out: dict[str, set[str]] = {}
        for host in self.hosts.values():
            out.setdefault(host.suite, set()).add(host.image)
        return out

    @property
    def expectations(self) -> list[Expect]:
        return self.topology.expect

    def messages(self) -> dict[str, SendSpec]:
        """The messages the scenario sends, by id."""
        return self.topology.messages()

    def host_by_address(self, address: str) -> str | None:
        try:
            wanted = ipaddress.ip_address(address.split("%")[0])
        except ValueError:
            return None
        if isinstance(wanted, ipaddress.IPv6Address) and wanted.ipv4_mapped:
            wanted = wanted.ipv4_mapped
        for host in self.hosts.values():
            if wanted in host.addresses():
                return host.name
        return None

    def host_by_fqdn(self, fqdn: str) -> str | None:
        fqdn = fqdn.rstrip(".").lower()
        return next((h.name for h in self.hosts.values() if h.fqdn == fqdn), None)

    def dns_config(self) -> dict[str, Any]:
        """The lab DNS server's configuration (see testbed.dnsserver)."""
        server = self.hosts[self.dns_server]
        return {
            "listen": [str(a) for a in server.addresses()],
            "port": 53,
            "zones": [
                {
                    "origin": z.origin,
                    "soa": _soa(server.fqdn),
                    "ttl": self.topology.dns.ttl,
                    "records": [{"name": r.name, "type": r.type, "ttl": r.ttl, "data": r.data} for r in z.records],
                }
                for z in self.zones
            ],
            "rules": self.dns_rules(self.topology.dns.rules),
        }

    def dns_rules(self, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Rules for the DNS server: a client given as a lab host name becomes its addresses."""
        addresses = {name: [str(a) for a in h.addresses()] for name, h in self.hosts.items()}
        return rules_with_client_addresses(rules, addresses)


def rules_with_client_addresses(rules: Any, addresses: Mapping[str, Sequence[str]]) -> Any:
    """DNS rules whose client is a lab host name get that host's addresses instead."""
    if not isinstance(rules, list):
        return rules
    out = []
    for rule in rules:
        match = rule.get("match") if isinstance(rule, dict) else None
        if isinstance(match, dict) and "client" in match:
            items = match["client"] if isinstance(match["client"], list) else [match["client"]]
            items = [a for c in items for a in (addresses.get(c, [c]) if isinstance(c, str) else [c])]
            rule = {**rule, "match": {**match, "client": items}}
        out.append(rule)
    return out


def _soa(server_fqdn: str) -> dict[str, Any]:
    return {
        "mname": server_fqdn + ".",
        "rname": "hostmaster." + server_fqdn + ".",
        "serial": 1,
        "refresh": 60,
        "retry": 30,
        "expire": 600,
        "minimum": 30,
    }


# --- address allocation ------------------------------------------------------


def segment_slots(
    pools_v4: ipaddress.IPv4Network, pools_v6: ipaddress.IPv6Network
) -> Iterator[tuple[int, ipaddress.IPv4Network, ipaddress.IPv6Network]]:
    """Candidate (index, /24, /64) pairs with the same index in both families.

    Slot 5 of the default pools is 198.18.5.0/24 and 2001:db8:5::/64, so an
    address's family twin is easy to spot in a log.
    """
    v4 = pools_v4.subnets(new_prefix=24)
    if pools_v6.prefixlen <= 48:
        v6 = (next(n.subnets(new_prefix=64)) for n in pools_v6.subnets(new_prefix=48))
    else:
        v6 = pools_v6.subnets(new_prefix=64)
    for index, (a, b) in enumerate(zip(v4, v6)):
        if index:  # slot 0 (198.18.0.0, 2001:db8::) reads like "unset"; skip it
            yield index, a, b  # type: ignore[misc]


def _overlaps(net: IPNetwork, used: Iterable[IPNetwork]) -> bool:
    return any(u.version == net.version and net.overlaps(u) for u in used)


def _host_ids(top: Topology) -> dict[tuple[str, str], int]:
    """(host, segment) -> host part, pinned or assigned in file order (validation saw that all fit)."""
    ids, problems = assign_host_ids(top)
    if problems:
        raise PreflightError("; ".join(message for _, message in problems))
    return ids


def _segments_of(top: Topology, host: str) -> list[str]:
    return segments_of(top, host)


def _v6_host(net: ipaddress.IPv6Network, host_id: int) -> ipaddress.IPv6Address:
    # Same digits in both families: host 25 is .25 and ::25, easy to read in logs.
    return net[int(str(host_id), 16)]


# --- the planner ---------------------------------------------------------------


def plan_lab(
    top: Topology,
    run_id: str,
    caps: EngineCaps,
    used_subnets: Sequence[IPNetwork] = (),
    suite: str | None = None,
) -> LabPlan:
    suite = suite or top.suite
    segments = _plan_segments(top, run_id, caps, used_subnets)
    ids = _host_ids(top)
    interfaces = {name: _plan_interfaces(top, name, segments, ids) for name in top.hosts}
    routes = _plan_routes(top, segments, interfaces)
    dns_name = top.dns_server()
    assert dns_name is not None  # guaranteed by validation
    dns_ifaces = interfaces[dns_name]
    roles = _plan_roles(top, segments, interfaces)
    hosts: dict[str, HostPlan] = {}
    for name, host in top.hosts.items():
        stack = top.host_stack(name)
        nameservers = tuple(
            a for f in ("ipv4", "ipv6") if f in FAMILIES_OF[stack] for i in dns_ifaces if (a := i.address(f))
        )
        hosts[name] = HostPlan(
            name=name,
            kind=host.kind,
            software=top.software_of(name),
            fqdn=top.fqdn_of(name),
            stack=stack,
            image=image_of(top.software_of(name)),
            suite=host.suite or suite,
            container=f"tb-{run_id}-{name}",
            interfaces=tuple(interfaces[name]),
            routes=tuple(routes[name]),
            nameservers=nameservers,
            sysctls=_sysctls(host.kind, stack),
            roles=roles.get(name, MailRoles()),
            gai_conf=host.gai_conf if host.gai_conf is not None and not host.gai_conf.empty else None,
            interface_sysctls=_interface_sysctls(top, name, segments),
            privacy_addresses=host.privacy_addresses,
            advertisements=_advertisements(top, name, segments, interfaces[name]),
        )
    zones = plan_zones(top, segments, hosts)
    labels = {LABEL_RUN: run_id, LABEL_LAB: top.name, LABEL_VARIANT: top.variant}
    mailboxes = _plan_mailboxes(top, hosts)
    return LabPlan(run_id, top, suite, caps, segments, hosts, zones, dns_name, labels, mailboxes)


def image_of(software: str) -> str:
    """The image (testbed/<image>:<suite>) a host running this software needs."""
    return adapter_for(software).image


def _plan_segments(
    top: Topology, run_id: str, caps: EngineCaps, used: Sequence[IPNetwork]
) -> dict[str, SegmentPlan]:
    pinned_v4 = [s.subnet_v4 for s in top.segments.values() if s.subnet_v4]
    pinned_v6 = [s.subnet_v6 for s in top.segments.values() if s.subnet_v6]
    for net in pinned_v4 + pinned_v6:
        clash = next((u for u in used if u.version == net.version and net.overlaps(u)), None)
        if clash:
            raise PreflightError(f"the pinned subnet {net} overlaps {clash}, which is already in use on this machine")
    need = [n for n, s in top.segments.items() if not (s.subnet_v4 and s.subnet_v6)]
    taken = [*used, *pinned_v4, *pinned_v6]
    free: list[tuple[ipaddress.IPv4Network, ipaddress.IPv6Network]] = []
    for _, net4, net6 in segment_slots(top.pools.ipv4, top.pools.ipv6):
        if len(free) == len(need):
            break
        if not _overlaps(net4, taken) and not _overlaps(net6, taken):
            free.append((net4, net6))
    if len(free) < len(need):
        raise PreflightError(
            f"the address pools {top.pools.ipv4} and {top.pools.ipv6} have no room for "
            f"{len(need)} more segments (in use: {', '.join(map(str, used)) or 'nothing'}); "
            "choose other pools under 'pools' in the topology"
        )
    slots = dict(zip(need, free))
    out: dict[str, SegmentPlan] = {}
    for index, (name, seg) in enumerate(top.segments.items()):
        wants_v4 = "ipv4" in FAMILIES_OF[seg.family] or not caps.ipv6_only_networks
        wants_v6 = "ipv6" in FAMILIES_OF[seg.family]
        slot4, slot6 = slots.get(name, (None, None))
        subnet_v4 = (seg.subnet_v4 or slot4) if wants_v4 else None
        subnet_v6 = (seg.subnet_v6 or slot6) if wants_v6 else None
        out[name] = SegmentPlan(
            name=name,
            family=seg.family,
            network=f"tb-{run_id}-{name}",
            bridge=f"tb{run_id}{index}"[:15],
            subnet_v4=subnet_v4,  # type: ignore[arg-type]
            subnet_v6=subnet_v6,  # type: ignore[arg-type]
            placeholder_v4=seg.family == "ipv6" and subnet_v4 is not None,
            advertise=seg.advertise and subnet_v6 is not None,
        )
    return out


def _plan_interfaces(
    top: Topology, name: str, segments: dict[str, SegmentPlan], ids: dict[tuple[str, str], int]
) -> list[Interface]:
    stack = FAMILIES_OF[top.host_stack(name)]
    out = []
    for seg_name in _segments_of(top, name):
        seg = segments[seg_name]
        host_id = ids[(name, seg_name)]
        d4 = seg.subnet_v4[host_id] if seg.subnet_v4 else None
        d6 = _v6_host(seg.subnet_v6, host_id) if seg.subnet_v6 else None
        ipv4 = d4 if "ipv4" in stack and "ipv4" in seg.carries else None
        ipv6 = d6 if "ipv6" in stack and "ipv6" in seg.carries else None
        extra: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
        for n in top.hosts[name].addresses.get(seg_name, []):
            if ipv4 is not None and seg.subnet_v4 is not None:
                extra.append(ipaddress.IPv4Interface(f"{seg.subnet_v4[n]}/{seg.subnet_v4.prefixlen}"))
            if ipv6 is not None and seg.subnet_v6 is not None:
                extra.append(ipaddress.IPv6Interface(f"{_v6_host(seg.subnet_v6, n)}/{seg.subnet_v6.prefixlen}"))
        out.append(
            Interface(
                segment=seg_name,
                ipv4=ipv4,
                ipv6=ipv6,
                docker_ipv4=d4,
                # A host without IPv6 gets none from Docker (disable_ipv6); the
                # network's dynamic range keeps Docker's own pick out of the way.
                docker_ipv6=d6 if "ipv6" in stack else None,
                extra=tuple(extra),
            )
        )
    return out


def _plan_routes(
    top: Topology, segments: dict[str, SegmentPlan], interfaces: dict[str, list[Interface]]
) -> dict[str, list[Route]]:
    """Static routes to every segment reachable through routers, per family.

    A breadth-first search from the segments a host is on, across routers
    that carry the family, gives for each remote segment the router to use
    first. Routers route through other routers the same way.
    """
    routers = [n for n, h in top.hosts.items() if h.kind == "router"]
    out: dict[str, list[Route]] = {name: [] for name in top.hosts}
    for family in ("ipv4", "ipv6"):
        carrying = {s for s, p in segments.items() if family in p.carries}
        # segment -> [(router, router's address on this segment, segment it leads to)]
        links: dict[str, list[tuple[str, IPAddress, str]]] = {s: [] for s in carrying}
        for router in routers:
            on = {i.segment: a for i in interfaces[router] if i.segment in carrying and (a := i.address(family))}
            for here, via in on.items():
                links[here] += [(router, via, there) for there in on if there != here]
        for name in top.hosts:
            if family not in FAMILIES_OF[top.host_stack(name)]:
                continue
            attached = [i.segment for i in interfaces[name] if i.address(family)]
            first_hop: dict[str, IPAddress] = {}
            queue = deque()
            for seg in attached:
                for router, via, there in links.get(seg, []):
                    if router != name and there not in attached and there not in first_hop:
                        first_hop[there] = via
                        queue.append(there)
            while queue:
                seg = queue.popleft()
                for _, _, there in links[seg]:
                    if there not in attached and there not in first_hop:
                        first_hop[there] = first_hop[seg]
                        queue.append(there)
            for target in sorted(first_hop):
                prefix = segments[target].lab_subnet(family)
                if prefix is not None:
                    out[name].append(Route(family, prefix, first_hop[target]))
    return out


def _sysctls(kind: str, stack: str) -> dict[str, str]:
    if kind == "router":
        return {
            "net.ipv4.ip_forward": "1",
            "net.ipv6.conf.all.forwarding": "1",
            "net.ipv6.conf.default.forwarding": "1",
            "net.ipv4.conf.all.rp_filter": "0",
            "net.ipv4.conf.default.rp_filter": "0",
            "net.ipv6.conf.all.disable_ipv6": "0",
            "net.ipv6.conf.default.disable_ipv6": "0",
            "net.ipv6.conf.all.accept_ra": "0",
            **_NO_DAD,
        }
    if stack == "ipv4":
        # No IPv6 at all: no address, no ::1, connects to IPv6 fail at once.
        return {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1"}
    return {
        "net.ipv6.conf.all.disable_ipv6": "0",
        "net.ipv6.conf.default.disable_ipv6": "0",
        "net.ipv6.conf.all.accept_ra": "0",
        **_NO_DAD,
    }


def _interface_sysctls(top: Topology, name: str, segments: dict[str, SegmentPlan]) -> dict[str, str]:
    """Router advertisements, per interface (``all.accept_ra`` does not reach an interface).

    A host with privacy addresses configures from its segment's advertisements
    and sources connections from the temporary address (use_tempaddr=2), but
    takes no default route from them (the lab's routes are its own; radvd also
    advertises no default router). Every other host on an advertised segment
    ignores them, or it would add an address of its own from the prefix.
    Routers forward, and a forwarding interface ignores them (accept_ra=1).
    """
    host = top.hosts[name]
    seg = segments.get(host.segment or "")
    if host.kind == "router" or seg is None or not seg.advertise or "ipv6" not in FAMILIES_OF[top.host_stack(name)]:
        return {}
    if not host.privacy_addresses:
        return {"net.ipv6.conf.IFNAME.accept_ra": "0"}
    return {
        "net.ipv6.conf.IFNAME.accept_ra": "1",
        "net.ipv6.conf.IFNAME.autoconf": "1",
        "net.ipv6.conf.IFNAME.use_tempaddr": "2",
        "net.ipv6.conf.IFNAME.accept_ra_defrtr": "0",
    }


def _advertisements(
    top: Topology, name: str, segments: dict[str, SegmentPlan], interfaces: list[Interface]
) -> tuple[Advertisement, ...]:
    """The advertised segments this router sends for: it is the first router (file order) on each."""
    if top.hosts[name].kind != "router":
        return ()
    out = []
    for iface in interfaces:
        seg = segments[iface.segment]
        first = next((n for n, h in top.hosts.items() if h.kind == "router" and iface.segment in (h.segments or [])), None)
        if seg.advertise and first == name and iface.ipv6 is not None and seg.subnet_v6 is not None:
            out.append(Advertisement(iface.segment, iface.ipv6, seg.subnet_v6))
    return tuple(out)


# Duplicate address detection keeps a new interface's link-local address
# "tentative" for about a second, and the first IPv6 connection to a host that
# has just started stalled meanwhile (measured: Postfix connection setup 1-2 s
# with DAD, 0.02-0.04 s without), long enough to trip a 2 s connect timeout -
# an artefact of containers starting seconds before the mail flows, not of the
# network under test. The lab assigns every address itself: nothing to detect.
_NO_DAD = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0"}


def _plan_roles(
    top: Topology, segments: dict[str, SegmentPlan], interfaces: dict[str, list[Interface]]
) -> dict[str, MailRoles]:
    lab_networks = tuple(
        net for seg in segments.values() for f in ("ipv4", "ipv6") if (net := seg.lab_subnet(f)) is not None
    )
    local: dict[str, list[LocalDomain]] = {}
    relay: dict[str, list[str]] = {}
    submission: dict[str, list[str]] = {}
    for dname, dom in top.domains.items():
        finals = top.final_mx_hosts(dname)
        store_fqdn = top.fqdn_of(dom.mailstore) if dom.mailstore else None
        for final in finals:
            local.setdefault(final, []).append(LocalDomain(dname, tuple(dom.mailboxes), store_fqdn))
        if dom.mailstore:
            local.setdefault(dom.mailstore, []).append(LocalDomain(dname, tuple(dom.mailboxes), store_fqdn))
        for mx in dom.mx:
            if mx not in finals:
                relay.setdefault(mx, []).append(dname)
        if dom.relay:
            submission.setdefault(dom.relay, []).append(dname)
    roles = {}
    for name, host in top.hosts.items():
        if host.kind not in ("mta", "mailstore"):
            continue
        subs = tuple(submission.get(name, ()))
        permitted = _relay_from(host, segments, interfaces) if host.relay_from is not None else lab_networks
        roles[name] = MailRoles(
            local_domains=tuple(local.get(name, ())),
            relay_domains=tuple(relay.get(name, ())),
            submission_for=subs,
            relay_networks=permitted if subs else (),
        )
    return roles


def _relay_from(host: Any, segments: dict[str, SegmentPlan], interfaces: dict[str, list[Interface]]) -> tuple[IPNetwork, ...]:
    """A relay's ``relay_from``: the hosts' planned addresses (/32, /128; extra ones too), then the segments' prefixes."""
    nets: list[IPNetwork] = []
    for other in host.relay_from.hosts:
        for iface in interfaces[other]:
            nets += [ipaddress.ip_network(a) for a in (iface.ipv4, iface.ipv6) if a is not None]
            nets += [ipaddress.ip_network(extra.ip) for extra in iface.extra]  # hosts.X.addresses
    for seg in host.relay_from.segments:
        nets += [n for f in ("ipv4", "ipv6") if (n := segments[seg].lab_subnet(f)) is not None]
    return tuple(dict.fromkeys(nets))


def _plan_mailboxes(top: Topology, hosts: dict[str, HostPlan]) -> tuple[MailboxReader, ...]:
    """Read each mailbox over IMAP from a client host, like a user (else inside its store)."""
    readers = []
    for dname, dom in top.domains.items():
        for user in dom.mailboxes:
            address = f"{user}@{dname}"
            if dom.mailstore:
                store = hosts[dom.mailstore]
                client = _imap_client(top, hosts, store)
                if client:
                    host, server = client
                    cmd = imap_dump_command(server, address, mailbox_password(address))
                    readers.append(MailboxReader(address, host, cmd, "imap from client"))
                else:
                    cmd = adapter_for(store.software, MailstoreAdapter).mailbox_command(dname, user)
                    readers.append(MailboxReader(address, store.name, cmd, "doveadm"))
                continue
            final = top.mailbox_host(dname)
            if final is None:
                continue
            maildir = mta_adapter(hosts[final].software).mailbox_command(dname, user)
            if maildir:
                readers.append(MailboxReader(address, final, maildir, "maildir"))
    return tuple(readers)


def _imap_client(top: Topology, hosts: dict[str, HostPlan], store: HostPlan) -> tuple[str, str] | None:
    """A client host and a store address it can reach over a family both have."""
    reach = reachable_segments(top)
    store_seg = store.interfaces[0].segment
    for host in hosts.values():
        if host.kind != "client":
            continue
        for family in ("ipv6", "ipv4"):
            addrs = store.addresses(family)
            if addrs and family in host.families and store_seg in reach[family].get(host.interfaces[0].segment, ()):
                return host.name, str(addrs[0])
    return None


# --- DNS data --------------------------------------------------------------------


def _abs(name: str) -> str:
    return name.rstrip(".").lower() + "."


def reverse_zone(net: IPNetwork) -> str:
    """The reverse zone of a /24 or /64 (octet / nibble boundary)."""
    rev = net.network_address.reverse_pointer
    if net.version == 4:
        return ".".join(rev.split(".")[4 - net.prefixlen // 8:]) + "."
    return ".".join(rev.split(".")[32 - net.prefixlen // 4:]) + "."


def plan_zones(top: Topology, segments: dict[str, SegmentPlan], hosts: dict[str, HostPlan]) -> tuple[Zone, ...]:
    ttl = top.dns.ttl
    records: list[Record] = []
    for host in hosts.values():
        fqdn = _abs(host.fqdn)
        for addr in host.addresses("ipv4"):
            records.append(Record(fqdn, "A", str(addr), ttl))
            records.append(Record(addr.reverse_pointer + ".", "PTR", fqdn, ttl))
        for addr in host.addresses("ipv6"):
            records.append(Record(fqdn, "AAAA", str(addr), ttl))
            records.append(Record(addr.reverse_pointer + ".", "PTR", fqdn, ttl))
    for name, owners in top.dns.names.items():
        for rtype, family in (("A", "ipv4"), ("AAAA", "ipv6")):
            records += [Record(_abs(name), rtype, str(a), ttl) for owner in owners for a in hosts[owner].addresses(family)]
    for dname, dom in top.domains.items():
        for mx, pref in sorted(dom.mx.items(), key=lambda kv: (kv[1], kv[0])):
            records.append(Record(_abs(dname), "MX", f"{pref} {_abs(hosts[mx].fqdn)}", ttl))
    # Overrides: an omitted name/type disappears; a given name/type replaces the derived set.
    for omit in top.dns.omit:
        records = [r for r in records if not (r.name == _abs(omit.name) and omit.type in (None, r.type))]
    given = {(_abs(r.name), r.type) for r in top.dns.records}
    records = [r for r in records if (r.name, r.type) not in given]
    records += [Record(_abs(r.name), r.type, r.data, r.ttl if r.ttl is not None else ttl) for r in top.dns.records]

    origins = {_abs(d) for d in top.domains}
    for host in hosts.values():
        if not any(_abs(host.fqdn).endswith("." + o) for o in origins):
            origins.add(_abs(host.fqdn).split(".", 1)[1])
    for seg in segments.values():
        for f in ("ipv4", "ipv6"):
            net = seg.lab_subnet(f)
            if net is not None:
                origins.add(reverse_zone(net))
    for r in records:  # an override outside every zone gets its own parent zone
        if not any(r.name == o or r.name.endswith("." + o) for o in origins):
            origins.add(r.name.split(".", 1)[1] if r.name.count(".") > 1 else r.name)
    zones: dict[str, list[Record]] = {o: [] for o in origins}
    for r in records:
        owner = max((o for o in origins if r.name == o or r.name.endswith("." + o)), key=len)
        zones[owner].append(r)
    ns = _abs(hosts[top.dns_server() or ""].fqdn) if top.dns_server() in hosts else None
    out = []
    for origin in sorted(zones):
        recs = zones[origin]
        if ns:
            recs = [Record(origin, "NS", ns, ttl), *recs]
        out.append(Zone(origin, tuple(recs)))
    return tuple(out)



def routed_paths_to_dns(plan: LabPlan) -> list[RoutedPath]:
    """Every host's way to the lab DNS server through a router, one per family it routes.

    Every host needs the DNS server, and a lab whose routers cannot forward
    (an engine that drops routed traffic between its bridges) fails here in
    seconds instead of minutes later as SMTP timeouts. Hosts on the server's
    own segment need no router and are not checked.
    """
    if plan.dns_server not in plan.hosts:
        return []
    dns = plan.hosts[plan.dns_server]
    paths = []
    for host in plan.hosts.values():
        if host.name == dns.name or host.kind == "router":
            continue
        for family in sorted(host.families):
            for address in dns.addresses(family):
                route = next((r for r in host.routes if r.family == family and address in r.prefix), None)
                if route is not None:
                    paths.append(RoutedPath(host.name, dns.name, family, address, route.via))
                    break
    return paths
