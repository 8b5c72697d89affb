"""What `testbed doctor` finds out about an engine that matters for labs.

Facts are gathered through the fabric (the Docker layer): the engine's version
and API, its firewall as seen from its own network namespace (read only), and
a routing probe: two lab-like networks joined by a router container, pinged
across per family, once as labs build them and, where the engine filters
direct access to containers, once without the lab's trusted bridges, to show
what the engine would do to a lab otherwise. ``assess`` turns the facts into
findings (pure, unit-tested).
"""

from __future__ import annotations

import ipaddress
import secrets
from dataclasses import dataclass, field, replace

import docker
import docker.errors

from . import fabric
from .errors import LabError
from .plan import LABEL_LAB, LABEL_RUN, EngineCaps, SegmentPlan, network_options

PROBE_LAB = "doctor-probe"
# Inside the default pools' last slots; skipped when in use (the probe then says so).
PROBE_SUBNETS = (
    (ipaddress.IPv4Network("198.19.254.0/24"), ipaddress.IPv6Network("2001:db8:fffe::/64")),
    (ipaddress.IPv4Network("198.19.255.0/24"), ipaddress.IPv6Network("2001:db8:ffff::/64")),
)


@dataclass(frozen=True)
class Firewall:
    """The engine's packet filter as its own network namespace shows it."""

    direct_access_drops_v4: int  # raw PREROUTING "-d ADDR ! -i BRIDGE -j DROP" rules
    direct_access_drops_v6: int
    bridge_nf_call_iptables: bool | None  # br_netfilter passes bridged frames through iptables
    bridge_nf_call_ip6tables: bool | None
    ip6tables: bool  # the engine manages ip6tables (DOCKER chains in the IPv6 filter table)


@dataclass(frozen=True)
class RoutingProbe:
    ipv4: bool
    ipv6: bool
    trusted: bool  # the networks trusted each other's bridges

    @property
    def ok(self) -> bool:
        return self.ipv4 and self.ipv6


@dataclass
class EngineFacts:
    version: str
    api: tuple[int, int]
    os: str = "?"
    kernel: str = "?"
    firewall_backend: str = ""
    firewall: Firewall | None = None
    probes: list[RoutingProbe] = field(default_factory=list)
    probe_note: str = ""


@dataclass(frozen=True)
class Finding:
    level: str  # "ok", "note", "problem"
    text: str


def read_firewall(client: docker.DockerClient, image: str) -> Firewall:
    """Read (never change) the engine's raw and filter tables and br_netfilter's switches."""
    script = (
        "echo '## raw4'; iptables-save -t raw 2>/dev/null; "
        "echo '## raw6'; ip6tables-save -t raw 2>/dev/null; "
        "echo '## filter6'; ip6tables-save -t filter 2>/dev/null; "
        "echo '## nf'; cat /proc/sys/net/bridge/bridge-nf-call-iptables /proc/sys/net/bridge/bridge-nf-call-ip6tables"
        " 2>/dev/null"
    )
    output = fabric.run_once(client, image, script, network_mode="host", cap_add=["NET_ADMIN"],
                             labels={LABEL_RUN: "doctor-" + secrets.token_hex(4), LABEL_LAB: PROBE_LAB})
    return parse_firewall(output)


def parse_firewall(output: str) -> Firewall:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("## "):
            current = line[3:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line.strip())

    def drops(name: str) -> int:
        return sum(1 for line in sections.get(name, []) if line.startswith("-A PREROUTING -d ")
                   and "! -i " in line and line.endswith("-j DROP"))

    nf = [line for line in sections.get("nf", []) if line in ("0", "1")]
    return Firewall(
        direct_access_drops_v4=drops("raw4"),
        direct_access_drops_v6=drops("raw6"),
        bridge_nf_call_iptables=(nf[0] == "1") if len(nf) > 0 else None,
        bridge_nf_call_ip6tables=(nf[1] == "1") if len(nf) > 1 else None,
        ip6tables=any(line.startswith(":DOCKER") for line in sections.get("filter6", [])),
    )


def probe_routing(client: docker.DockerClient, caps: EngineCaps, image: str,
                  with_firewall: bool = False) -> tuple[RoutingProbe, Firewall | None]:
    """Two networks, a router on both, a host on each: does a ping cross, per family?

    ``with_firewall`` also reads the engine's rules while the probe's containers
    exist (the direct-access rules are per container).
    """
    run_id = secrets.token_hex(4)
    used = {n for n, _ in fabric.docker_subnets(client)}
    if any(net in used for pair in PROBE_SUBNETS for net in pair):
        raise LabError("the probe's subnets (198.19.254-255.0/24, 2001:db8:fffe-ffff::/64) are in use")
    segments = {
        name: SegmentPlan(name, "dual", f"testbed-{PROBE_LAB}-{run_id}-{name}", f"tb{run_id}{name}"[:15], v4, v6)
        for name, (v4, v6) in zip(("a", "b"), PROBE_SUBNETS, strict=True)
    }
    labels = {LABEL_RUN: run_id, LABEL_LAB: PROBE_LAB}
    try:
        for seg in segments.values():
            fabric.create_network(client, seg, network_options(segments, seg.name, caps), labels)
        a, b = segments["a"], segments["b"]
        fabric.start_probe_container(client, image, f"{PROBE_LAB}-{run_id}-router", labels,
                                     [(a.network, a.subnet_v4[2], a.subnet_v6[2]),
                                      (b.network, b.subnet_v4[2], b.subnet_v6[2])], router=True)
        for seg, other in ((a, b), (b, a)):
            name = f"{PROBE_LAB}-{run_id}-{seg.name}"
            fabric.start_probe_container(client, image, name, labels,
                                         [(seg.network, seg.subnet_v4[10], seg.subnet_v6[10])])
            routes = (f"ip route del default; ip -6 route del default; "
                      f"ip route add {other.subnet_v4} via {seg.subnet_v4[2]}; "
                      f"ip -6 route add {other.subnet_v6} via {seg.subnet_v6[2]}")
            fabric.exec_in(client, name, routes, timeout=10)
        src = f"{PROBE_LAB}-{run_id}-a"
        v4 = fabric.exec_in(client, src, f"ping -c 3 -i 0.2 -W 2 -q {b.subnet_v4[10]}", timeout=15).ok
        v6 = fabric.exec_in(client, src, f"ping -c 3 -i 0.2 -W 2 -q {b.subnet_v6[10]}", timeout=15).ok
        firewall = read_firewall(client, image) if with_firewall else None
        return RoutingProbe(v4, v6, caps.trusted_host_interfaces), firewall
    finally:
        fabric.teardown(client, run_id)


def gather(client: docker.DockerClient, image: str | None) -> EngineFacts:
    """Everything ``assess`` needs; the firewall and the probes only where an image is there to run them."""
    caps = fabric.engine_caps(client)
    info = fabric.engine_info(client)
    facts = EngineFacts(
        version=fabric.engine_version(client),
        api=caps.api_version,
        os=str(info.get("OperatingSystem", "?")),
        kernel=str(info.get("KernelVersion", "?")),
        firewall_backend=str((info.get("FirewallBackend") or {}).get("Driver", "")),
    )
    if image is None:
        facts.probe_note = "no testbed image on this engine yet (`make images`): firewall and routing not probed"
        return facts
    try:
        probe, facts.firewall = probe_routing(client, caps, image, with_firewall=True)
        facts.probes.append(probe)
        if caps.direct_access_filter:
            facts.probes.append(probe_routing(client, replace(caps, trust_lab_bridges=False), image)[0])
    except (LabError, docker.errors.DockerException) as exc:
        facts.probe_note = f"probe failed: {exc}"
    return facts


def _families(probe: RoutingProbe) -> str:
    return ", ".join(f"{fam} {'passes' if ok else 'DROPPED'}" for fam, ok in (("IPv4", probe.ipv4), ("IPv6", probe.ipv6)))


def assess(facts: EngineFacts) -> list[Finding]:
    """What the facts mean for labs, with what the user can do where they will not work."""
    caps = EngineCaps(facts.api)
    found = []
    if caps.direct_access_filter:
        found.append(Finding("note", "engine 28.2+ drops packets addressed to a container unless they arrive on "
                                     "its own bridge; labs trust their own other bridges "
                                     "(com.docker.network.bridge.trusted_host_interfaces), nothing else"))
    if fw := facts.firewall:
        found.append(Finding("note", f"direct-access DROP rules in the raw table with the probe's 3 containers up: "
                                     f"{fw.direct_access_drops_v4} IPv4, {fw.direct_access_drops_v6} IPv6"))
        nf = {True: "on", False: "off", None: "not loaded"}
        found.append(Finding("note", f"br_netfilter: bridged IPv4 frames through iptables "
                                     f"{nf[fw.bridge_nf_call_iptables]}, IPv6 through ip6tables "
                                     f"{nf[fw.bridge_nf_call_ip6tables]}; engine's ip6tables "
                                     f"{'on' if fw.ip6tables else 'off'}"))
    for probe in facts.probes:
        how = "as labs build them" if probe.trusted or not caps.direct_access_filter else "without trusted bridges"
        if probe.trusted or not caps.direct_access_filter:
            level = "ok" if probe.ok else "problem"
        else:
            level = "note"
        found.append(Finding(level, f"routing probe ({how}): {_families(probe)}"))
    if facts.probe_note:
        found.append(Finding("note", facts.probe_note))
    lab_probe = next((p for p in facts.probes if p.trusted or not caps.direct_access_filter), None)
    if lab_probe is not None and not lab_probe.ok:
        found.append(Finding("problem", _advice(caps)))
    return found


def _advice(caps: EngineCaps) -> str:
    if caps.api_version >= (1, 48) and not caps.trusted_host_interfaces:
        return ("labs will not work: this engine (28.0/28.1) drops routed traffic between bridges and knows no "
                "trusted_host_interfaces; upgrade to Docker 28.2 or newer")
    return ("labs will not work: traffic routed between the lab's networks is dropped. Look for a host firewall "
            "rule in FORWARD or raw PREROUTING that drops traffic between Docker bridges (the testbed never "
            "changes the host's firewall), or run the tests on a nested engine: `testbed engine run -- ...`")


def labs_will_work(findings: list[Finding]) -> bool:
    return not any(f.level == "problem" for f in findings)
