"""A docker-compose file equivalent to one planned lab (pure: plan in, compose data out).

For the side-by-side benchmark (``scripts/bench_compose.py``): what a user would
write by hand to get the same lab without the testbed. The same images (by id),
networks (bridge names, driver options, subnets, gateways, ranges), fixed
addresses, limits, capabilities, sysctls, tmpfs and data volumes as
``fabric.Lab`` creates. Compose cannot copy files into a container before it
starts, so the rendered files are bind-mounted one by one from a directory,
which is how a compose user would ship them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .adapters import RenderedFile
from .fabric import CONTAINER_MEMORY, CONTAINER_PIDS
from .plan import ENDPOINT_SYSCTLS, LABEL_ADDRESSES, LABEL_HOST, LABEL_KIND, HostPlan, LabPlan, SegmentPlan, network_options

# 2.4: the last format with mem_limit, pids_limit, enable_ipv6 and ip_range for
# plain (non-swarm) docker-compose; Debian's docker-compose 1.29 reads it.
COMPOSE_VERSION = "2.4"


def _ipam(seg: SegmentPlan) -> list[dict[str, str]]:
    """The same pools as fabric.create_network asks for."""
    return [{"subnet": str(p.subnet), "gateway": str(p.gateway), "ip_range": str(p.ip_range)}
            for p in seg.address_pools()]


def _network(plan: LabPlan, seg: SegmentPlan) -> dict[str, Any]:
    return {
        "driver": "bridge",
        "enable_ipv6": seg.subnet_v6 is not None,
        "driver_opts": network_options(plan.segments, seg.name, plan.caps),
        "ipam": {"driver": "default", "config": _ipam(seg)},
        "labels": dict(plan.labels),
    }


def volume_key(host: HostPlan, index: int) -> str:
    return f"{host.name}-data-{index}"


def file_source(files_dir: Path, host: str, f: RenderedFile) -> Path:
    """Where a rendered file lies for its bind mount: ``files_dir/<host>/<path>``."""
    return files_dir / host / f.path.lstrip("/")


def _service(plan: LabPlan, host: HostPlan, image: str, files: Sequence[RenderedFile],
             data_dirs: Sequence[str], files_dir: Path) -> dict[str, Any]:
    networks: dict[str, dict[str, Any]] = {}
    endpoint_sysctls = host.endpoint_sysctls(plan.caps)
    for index, iface in enumerate(host.interfaces):
        addresses: dict[str, Any] = {}
        if iface.docker_ipv4:
            addresses["ipv4_address"] = str(iface.docker_ipv4)
        if iface.docker_ipv6:
            addresses["ipv6_address"] = str(iface.docker_ipv6)
        if endpoint_sysctls and index == 0:
            addresses["driver_opts"] = {ENDPOINT_SYSCTLS: endpoint_sysctls}
        networks[iface.segment] = addresses
    volumes = [f"{volume_key(host, i)}:{path}" for i, path in enumerate(data_dirs)]
    volumes += [f"{file_source(files_dir, host.name, f)}:{f.path}" for f in files]
    return {
        "image": image,
        "container_name": host.container,
        "hostname": host.fqdn,
        "init": True,
        "mem_limit": CONTAINER_MEMORY,
        "pids_limit": CONTAINER_PIDS,
        "cap_add": ["NET_ADMIN"],
        "sysctls": host.engine_sysctls(plan.caps),
        "tmpfs": ["/run/testbed:size=1m"],
        "volumes": volumes,
        "networks": networks,
        "labels": {
            **plan.labels,
            LABEL_HOST: host.name,
            LABEL_KIND: host.kind,
            LABEL_ADDRESSES: ",".join(map(str, host.addresses())),
        },
    }


def compose_file(plan: LabPlan, images: Mapping[str, str], files: Mapping[str, Sequence[RenderedFile]],
                 data_dirs: Mapping[str, Sequence[str]], files_dir: Path) -> dict[str, Any]:
    """The compose data for ``plan``; ``images`` maps image names to ids, ``files_dir`` holds the files."""
    volumes = {
        volume_key(host, i): {"labels": {**plan.labels, LABEL_HOST: host.name}}
        for host in plan.hosts.values()
        for i, _ in enumerate(data_dirs.get(host.name, ()))
    }
    return {
        "version": COMPOSE_VERSION,
        "services": {
            name: _service(plan, host, images[host.image], files.get(name, ()), data_dirs.get(name, ()), files_dir)
            for name, host in plan.hosts.items()
        },
        "networks": {seg.name: _network(plan, seg) for seg in plan.segments.values()},
        "volumes": volumes,
    }


def write_files(files: Mapping[str, Sequence[RenderedFile]], files_dir: Path) -> None:
    """The rendered files where the compose file's bind mounts expect them, with their modes."""
    for host, rendered in files.items():
        for f in rendered:
            target = file_source(files_dir, host, f)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.content)
            target.chmod(f.mode)
