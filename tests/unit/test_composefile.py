"""The compose file the benchmark compares with: the same lab as fabric.Lab builds."""

from __future__ import annotations

from pathlib import Path

from recorded import mx_routing_plan

from testbed.adapters import adapter_for
from testbed.composefile import compose_file, file_source, write_files
from testbed.fabric import CONTAINER_MEMORY, CONTAINER_PIDS
from testbed.plan import LABEL_HOST, LABEL_RUN, network_options
from testbed.render import lab_files


def make(tmp_path: Path):
    plan = mx_routing_plan()
    files = lab_files(plan)
    dirs = {h.name: adapter_for(h.software).data_dirs for h in plan.hosts.values()}
    images = {h.image: f"sha256:{h.image}" for h in plan.hosts.values()}
    return plan, files, compose_file(plan, images, files, dirs, tmp_path / "files")


def test_every_host_a_service_with_the_same_image_limits_and_labels(tmp_path: Path) -> None:
    plan, _, data = make(tmp_path)
    assert set(data["services"]) == set(plan.hosts)
    for name, host in plan.hosts.items():
        svc = data["services"][name]
        assert svc["image"] == f"sha256:{host.image}"
        assert svc["container_name"] == host.container and svc["hostname"] == host.fqdn
        assert svc["mem_limit"] == CONTAINER_MEMORY and svc["pids_limit"] == CONTAINER_PIDS
        assert svc["cap_add"] == ["NET_ADMIN"] and svc["init"] is True
        assert svc["sysctls"] == host.sysctls
        assert svc["labels"][LABEL_RUN] == plan.run_id and svc["labels"][LABEL_HOST] == name


def test_fixed_addresses_on_every_interface(tmp_path: Path) -> None:
    plan, _, data = make(tmp_path)
    for name, host in plan.hosts.items():
        nets = data["services"][name]["networks"]
        assert set(nets) == {i.segment for i in host.interfaces}
        for iface in host.interfaces:
            if iface.docker_ipv4:
                assert nets[iface.segment]["ipv4_address"] == str(iface.docker_ipv4)
            if iface.docker_ipv6:
                assert nets[iface.segment]["ipv6_address"] == str(iface.docker_ipv6)


def test_networks_have_the_fabrics_pools_and_options(tmp_path: Path) -> None:
    plan, _, data = make(tmp_path)
    for seg in plan.segments.values():
        net = data["networks"][seg.name]
        assert net["driver_opts"] == network_options(plan.segments, seg.name, plan.caps)
        assert net["enable_ipv6"] == (seg.subnet_v6 is not None)
        assert [c["subnet"] for c in net["ipam"]["config"]] == [str(p.subnet) for p in seg.address_pools()]
        assert all(c["ip_range"] and c["gateway"] for c in net["ipam"]["config"])


def test_rendered_files_are_bind_mounted_where_they_are_written(tmp_path: Path) -> None:
    plan, files, data = make(tmp_path)
    write_files(files, tmp_path / "files")
    for name, rendered in files.items():
        mounts = data["services"][name]["volumes"]
        for f in rendered:
            source = file_source(tmp_path / "files", name, f)
            assert f"{source}:{f.path}" in mounts
            assert source.read_text() == f.content
            assert source.stat().st_mode & 0o777 == f.mode


def test_data_dirs_are_named_volumes(tmp_path: Path) -> None:
    plan, _, data = make(tmp_path)
    for name, host in plan.hosts.items():
        dirs = adapter_for(host.software).data_dirs
        named = [v for v in data["services"][name]["volumes"] if not v.startswith("/")]
        assert [v.split(":", 1)[1] for v in named] == list(dirs)
        for v in named:
            assert v.split(":", 1)[0] in data["volumes"]
