"""Rendered configuration for every host of a lab (pure: plan in, files out)."""

from __future__ import annotations

from pathlib import Path

from . import faults, gaiconf
from .adapters import RenderedFile, adapter_for
from .plan import HostPlan, LabPlan
from .templating import render


#: glibc's address-selection tables (getaddrinfo), for a host whose topology entry sets ``gai_conf``.
GAI_CONF = "/etc/gai.conf"


def host_files(plan: LabPlan, host: HostPlan) -> list[RenderedFile]:
    """Everything the fabric puts into one container before it starts."""
    gateways = [
        str(gw)
        for iface in host.interfaces
        for family in sorted(host.families)
        if iface.address(family) is not None
        and (gw := plan.segments[iface.segment].gateway(family)) is not None
    ]
    dns_fqdn = plan.hosts[plan.dns_server].fqdn
    common = [
        RenderedFile("/etc/testbed/net.sh", render("common/net.sh.j2", host=host, gateways=gateways,
                                                           fault_lines=faults.boot_lines(plan, host.name),
                                                           plan_prefix=_advertised_prefix(plan, host))),
        RenderedFile("/etc/testbed/resolv.conf", render("common/resolv.conf.j2", host=host, dns_fqdn=dns_fqdn)),
        RenderedFile("/etc/testbed/hosts", render("common/hosts.j2", host=host)),
    ]
    if host.gai_conf is not None:
        # Straight into the image's own path: the engine never rewrites it, so it survives restarts.
        common.append(RenderedFile(GAI_CONF, gaiconf.render(host.gai_conf.table, host.gai_conf.entries(), host.name)))
    adapter = adapter_for(host.software)
    return common + adapter.service_files(host) + adapter.files(host, plan)


def _advertised_prefix(plan: LabPlan, host: HostPlan) -> str | None:
    """The IPv6 prefix a host with privacy addresses gets its temporary address from."""
    if not host.privacy_addresses:
        return None
    return str(plan.segments[host.interfaces[0].segment].subnet_v6)


def lab_files(plan: LabPlan) -> dict[str, list[RenderedFile]]:
    return {name: host_files(plan, host) for name, host in plan.hosts.items()}


def write_tree(files: dict[str, list[RenderedFile]], root: Path) -> None:
    """Write rendered files under root/<host>/<path> (for the run directory and `testbed render`)."""
    for host, rendered in files.items():
        for f in rendered:
            target = root / host / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.content)
            target.chmod(f.mode)
