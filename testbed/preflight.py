"""Before anything is created: is there an engine, and are the lab's addresses free?

A lab network that overlaps a range the machine itself uses (its uplink, its
resolver, its package mirror) silently steals that traffic, so the pools are
checked against the host's routes, addresses, resolvers and mirror addresses,
and the planned subnets against every existing Docker network.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from .errors import PreflightError
from .model import Pools
from .plan import IPNetwork

# Routes on these devices belong to Docker networks, which are checked by name.
_DOCKER_DEVICES = ("docker", "br-", "tb", "veth")


@dataclass(frozen=True)
class Reserved:
    network: IPNetwork
    why: str


def _routes_v4(text: str) -> list[Reserved]:
    out = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 8:
            continue
        dev, dest, mask = fields[0], fields[1], fields[7]
        if dev.startswith(_DOCKER_DEVICES):
            continue
        try:
            addr = ipaddress.IPv4Address(bytes.fromhex(dest)[::-1])
            netmask = ipaddress.IPv4Address(bytes.fromhex(mask)[::-1])
            net = ipaddress.IPv4Network(f"{addr}/{netmask}", strict=False)
        except ValueError:
            continue
        if net.prefixlen:
            out.append(Reserved(net, f"a route of this machine on {dev}"))
    return out


def _routes_v6(text: str) -> list[Reserved]:
    out = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 10:
            continue
        dest, plen, dev = fields[0], int(fields[1], 16), fields[9]
        if dev.startswith(_DOCKER_DEVICES) or dev == "lo" or plen == 0:
            continue
        try:
            net = ipaddress.IPv6Network(f"{ipaddress.IPv6Address(bytes.fromhex(dest))}/{plen}", strict=False)
        except ValueError:
            continue
        if net.is_link_local or net.is_multicast:
            continue
        out.append(Reserved(net, f"a route of this machine on {dev}"))
    return out


def _addresses() -> list[Reserved]:
    try:
        text = subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True, timeout=5).stdout
        links = json.loads(text or "[]")
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return []
    out = []
    for link in links:
        dev = link.get("ifname", "?")
        if dev == "lo" or dev.startswith(_DOCKER_DEVICES):
            continue
        for a in link.get("addr_info", []):
            try:
                net = ipaddress.ip_network(f"{a['local']}/{a.get('prefixlen', 32)}", strict=False)
            except (KeyError, ValueError):
                continue
            if not (net.is_link_local or net.network_address.is_loopback):
                out.append(Reserved(net, f"an address of this machine on {dev}"))
    return out


def _resolvers(resolv_conf: Path = Path("/etc/resolv.conf")) -> list[Reserved]:
    out = []
    try:
        lines = resolv_conf.read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                addr = ipaddress.ip_address(parts[1].split("%")[0])
            except ValueError:
                continue
            if not addr.is_loopback:
                out.append(Reserved(ipaddress.ip_network(addr), "this machine's DNS resolver"))
    return out


def _mirrors() -> list[Reserved]:
    """Addresses of the package mirrors in the host's apt sources (images are built from them)."""
    from .aptsources import read_apt_sources  # local: the image pipeline owns apt-source parsing

    hosts = set()
    try:
        for src in read_apt_sources():
            for uri in src.uris:
                host = urlparse(uri).hostname
                if host:
                    hosts.add(host)
    except OSError:
        return []
    out = []
    for host in sorted(hosts):
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        for info in infos:
            addr = ipaddress.ip_address(info[4][0].split("%")[0])
            out.append(Reserved(ipaddress.ip_network(addr), f"the package mirror {host}"))
    return out


def host_reserved() -> list[Reserved]:
    """Everything on this machine a lab must not overlap."""
    reserved: list[Reserved] = []
    try:
        reserved += _routes_v4(Path("/proc/net/route").read_text())
        reserved += _routes_v6(Path("/proc/net/ipv6_route").read_text())
    except OSError:
        pass
    reserved += _addresses() + _resolvers() + _mirrors()
    unique: dict[IPNetwork, Reserved] = {}
    for r in reserved:
        unique.setdefault(r.network, r)
    return list(unique.values())


def check_pools(pools: Pools, reserved: list[Reserved]) -> None:
    """Stop, naming each clash, if a pool overlaps something the machine uses."""
    clashes = [
        f"{pool} overlaps {r.network} ({r.why})"
        for pool in (pools.ipv4, pools.ipv6)
        for r in reserved
        if r.network.version == pool.version and pool.overlaps(r.network)
    ]
    if clashes:
        raise PreflightError(
            "the lab's address pools collide with this machine's own addresses:\n  "
            + "\n  ".join(clashes)
            + "\nChoose other pools under 'pools' in the topology (defaults: 198.18.0.0/15, 2001:db8::/32)."
        )
