"""Address planning, routes and DNS data (no Docker)."""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from testbed.errors import PreflightError
from testbed.model import DnsOmit, DnsRecord, DnsSettings, load_topology
from testbed.plan import EngineCaps, network_options, plan_lab, reverse_zone

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
OLD = EngineCaps((1, 41))
NEW = EngineCaps((1, 48))
ENGINE_28_5 = EngineCaps((1, 51))


def mx_routing(variant: str | None = None):
    return load_topology(TOPOLOGIES / "mx-routing.yaml", variant)


def records(plan, name: str, rtype: str) -> list[str]:
    return [r.data for z in plan.zones for r in z.records if r.name == name and r.type == rtype]


def test_segments_get_paired_slots_avoiding_used_subnets() -> None:
    used = [ipaddress.ip_network("198.18.1.0/24"), ipaddress.ip_network("2001:db8:2::/48")]
    plan = plan_lab(mx_routing(), "r1", OLD, used)
    subnets = [(str(s.subnet_v4), str(s.subnet_v6)) for s in plan.segments.values()]
    assert subnets == [
        ("198.18.3.0/24", "2001:db8:3::/64"),
        ("198.18.4.0/24", "2001:db8:4::/64"),
        ("198.18.5.0/24", "None"),
    ]


def test_ipv6_only_segment_has_ipv4_placeholder_only_on_old_engines() -> None:
    old = plan_lab(mx_routing(), "r1", OLD).segments["v6net"]
    new = plan_lab(mx_routing(), "r1", NEW).segments["v6net"]
    assert old.placeholder_v4 and old.subnet_v4 is not None
    assert not new.placeholder_v4 and new.subnet_v4 is None


def test_host_addresses_follow_the_stack() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    mx20, relay, mx10 = plan.hosts["mx20"], plan.hosts["relay"], plan.hosts["mx10"]
    assert mx20.addresses("ipv4") == [] and [str(a) for a in mx20.addresses("ipv6")] == ["2001:db8:2::20"]
    assert mx20.interfaces[0].docker_ipv4 is not None  # the engine insists; tb-init flushes it
    assert relay.addresses("ipv6") == [] and relay.interfaces[0].docker_ipv6 is None
    assert [str(a) for a in mx10.addresses()] == ["198.18.1.10", "2001:db8:1::10"]


def test_routes_go_through_the_router_per_family() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    relay = {(r.family, str(r.prefix), str(r.via)) for r in plan.hosts["relay"].routes}
    mx20 = {(r.family, str(r.prefix), str(r.via)) for r in plan.hosts["mx20"].routes}
    assert relay == {("ipv4", "198.18.1.0/24", "198.18.3.2")}  # no way to the IPv6-only segment
    assert mx20 == {("ipv6", "2001:db8:1::/64", "2001:db8:2::2")}
    assert plan.hosts["router"].routes == ()


def test_routes_across_two_routers(tmp_path: Path) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text(textwrap.dedent("""
        name: chain
        segments: {a: {family: dual}, b: {family: dual}, c: {family: ipv6}}
        hosts:
          r1: {kind: router, segments: [a, b]}
          r2: {kind: router, segments: [b, c]}
          dns: {kind: dns, segment: a}
          far: {kind: mta, segment: c, fqdn: far.example.net}
    """))
    plan = plan_lab(load_topology(path), "r1", OLD)
    far = {(str(r.prefix), str(r.via)) for r in plan.hosts["far"].routes}
    r1 = {(r.family, str(r.prefix), str(r.via)) for r in plan.hosts["r1"].routes}
    b6 = plan.segments["b"].subnet_v6
    c6 = plan.segments["c"].subnet_v6
    assert far == {(str(plan.segments["a"].subnet_v6), str(c6[2])), (str(b6), str(c6[2]))}
    assert r1 == {("ipv6", str(c6), str(b6[3]))}  # r2 is .3 on b: routers number from 2 up


def test_zones_publish_only_the_families_a_host_has() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    assert records(plan, "mx20.brainbird.nl.", "A") == []
    assert records(plan, "mx20.brainbird.nl.", "AAAA") == ["2001:db8:2::20"]
    assert records(plan, "relay.skimbee.net.", "AAAA") == []
    assert records(plan, "brainbird.nl.", "MX") == [
        "10 mx10.brainbird.nl.", "20 mx20.brainbird.nl.", "30 mx30.brainbird.nl."]
    ptr = ipaddress.ip_address("2001:db8:2::20").reverse_pointer + "."
    assert records(plan, ptr, "PTR") == ["mx20.brainbird.nl."]
    origins = {z.origin for z in plan.zones}
    assert {"brainbird.nl.", "skimbee.net.", "lab.test.", "1.18.198.in-addr.arpa."} <= origins


def test_dns_overrides_omit_and_replace(tmp_path: Path) -> None:
    topo = mx_routing()
    dns = DnsSettings(
        omit=[DnsOmit(name="mx30.brainbird.nl", type="AAAA")],
        records=[DnsRecord(name="mx10.brainbird.nl", type="A", data="198.18.9.9")],
    )
    plan = plan_lab(topo.model_copy(update={"dns": dns}), "r1", OLD)
    assert records(plan, "mx30.brainbird.nl.", "AAAA") == []
    assert records(plan, "mx30.brainbird.nl.", "A") == ["198.18.1.30"]
    assert records(plan, "mx10.brainbird.nl.", "A") == ["198.18.9.9"]
    assert records(plan, "mx10.brainbird.nl.", "AAAA") == ["2001:db8:1::10"]


def test_dns_config_listens_on_the_servers_addresses() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    cfg = plan.dns_config()
    assert cfg["listen"] == ["198.18.1.53", "2001:db8:1::53"]
    assert all(z["origin"].endswith(".") for z in cfg["zones"])
    assert plan.hosts["relay"].nameservers == (ipaddress.ip_address("198.18.1.53"),)
    assert plan.hosts["mx20"].nameservers == (ipaddress.ip_address("2001:db8:1::53"),)


def test_roles() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    assert plan.hosts["mx10"].roles.local_domains[0].name == "brainbird.nl"
    assert plan.hosts["mx20"].roles.relay_domains == ("brainbird.nl",)
    assert plan.hosts["relay"].roles.submission_for == ("skimbee.net",)
    assert plan.hosts["relay"].roles.relay_networks
    assert plan.hosts["mx30"].roles.relay_networks == ()


def test_sysctls_make_ipv4_only_hosts_ipv6_free() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    assert plan.hosts["relay"].sysctls["net.ipv6.conf.all.disable_ipv6"] == "1"
    assert plan.hosts["router"].sysctls["net.ipv4.ip_forward"] == "1"


def test_full_pool_is_a_clear_error() -> None:
    used = [ipaddress.ip_network("198.18.0.0/15")]
    with pytest.raises(PreflightError, match="no room for 3 more segments"):
        plan_lab(mx_routing(), "r1", OLD, used)


def test_pinned_subnet_overlapping_the_machine(tmp_path: Path) -> None:
    topo = mx_routing()
    seg = topo.segments["core"].model_copy(update={"subnet_v4": ipaddress.ip_network("192.0.2.0/24")})
    topo = topo.model_copy(update={"segments": {**topo.segments, "core": seg}})
    with pytest.raises(PreflightError, match="192.0.2.0/24 overlaps"):
        plan_lab(topo, "r1", OLD, [ipaddress.ip_network("192.0.2.0/24")])


def test_reverse_zone_names() -> None:
    assert reverse_zone(ipaddress.ip_network("198.18.5.0/24")) == "5.18.198.in-addr.arpa."
    assert reverse_zone(ipaddress.ip_network("2001:db8:5::/64")) == "0.0.0.0.5.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."


def test_host_by_address_handles_mapped_addresses() -> None:
    plan = plan_lab(mx_routing(), "r1", OLD)
    assert plan.host_by_address("::ffff:198.18.3.25") == "relay"
    assert plan.host_by_address("2001:db8:2::20") == "mx20"
    assert plan.host_by_address("203.0.113.1") is None


TRUSTED = "com.docker.network.bridge.trusted_host_interfaces"


def test_networks_never_masquerade_and_trust_only_the_labs_other_bridges() -> None:
    plan = plan_lab(mx_routing(), "r1", ENGINE_28_5)
    bridges = {name: seg.bridge for name, seg in plan.segments.items()}
    assert len(set(bridges.values())) == len(bridges) == 3
    for name, seg in plan.segments.items():
        options = network_options(plan.segments, name, plan.caps)
        assert options["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert options["com.docker.network.bridge.name"] == seg.bridge
        trusted = options[TRUSTED].split(":")
        assert sorted(trusted) == sorted(b for n, b in bridges.items() if n != name)
    assert network_options(plan.segments, "v6net", plan.caps)["com.docker.network.enable_ipv4"] == "false"


@pytest.mark.parametrize("api", [(1, 41), (1, 45), (1, 48), (1, 49)])
def test_engines_without_direct_access_filtering_get_no_trusted_interfaces(api) -> None:
    caps = EngineCaps(api)
    plan = plan_lab(mx_routing(), "r1", caps)
    assert not caps.direct_access_filter
    assert all(TRUSTED not in network_options(plan.segments, n, caps) for n in plan.segments)


def test_routed_paths_to_dns_cover_every_family_a_host_routes() -> None:
    from testbed.plan import routed_paths_to_dns

    plan = plan_lab(mx_routing(), "r1", OLD)
    paths = {(p.host, p.family, str(p.address), str(p.via)) for p in routed_paths_to_dns(plan)}
    dns = plan.hosts["dns"]
    assert plan.hosts["relay"].families == {"ipv4"}
    assert ("relay", "ipv4", str(dns.addresses("ipv4")[0]), "198.18.3.2") in paths
    assert ("mx20", "ipv6", str(dns.addresses("ipv6")[0]), "2001:db8:2::2") in paths
    # Hosts on the DNS server's own segment, and routers, need no check.
    assert not {p for p in paths if p[0] in ("mx10", "mx30", "router", "dns")}


def test_the_plan_says_how_each_mailbox_is_read(topologies_dir: Path) -> None:
    from recorded import mx_routing_plan

    exim = mx_routing_plan(software="exim")
    assert [(r.address, r.host, r.how) for r in exim.mailboxes] == [
        ("user@brainbird.nl", "client", "imap from client"), ("user@skimbee.net", "client", "imap from client")]
    # The client is on the dual-stack core: IPv6 to brainbird.nl's store, IPv4 to IPv4-only skimbee.net's.
    assert "imap.brainbird.nl" not in exim.mailboxes[0].command and "2001:db8:1::110" in exim.mailboxes[0].command
    assert "198.18.3.111" in exim.mailboxes[1].command
