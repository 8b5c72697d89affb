"""Per-host network and resolver files (what tb-init applies at every start)."""

from __future__ import annotations

from recorded import mx_routing_plan

from testbed.render import host_files


def files(plan, host: str) -> dict[str, str]:
    return {f.path: f.content for f in host_files(plan, plan.hosts[host])}


def test_ipv6_only_host_drops_the_engines_ipv4() -> None:
    plan = mx_routing_plan()
    net = files(plan, "mx20")["/etc/testbed/net.sh"]
    assert "tb_wait_addr 198.18.2.20" in net and "tb_wait_addr 2001:db8:2::20" in net
    assert 'ip -4 addr flush dev "$ifname"' in net
    assert "ip -6 route replace 2001:db8:1::/64 via 2001:db8:2::2" in net
    assert "ip -6 route replace prohibit 2001:db8:2::1" in net
    assert "while ip -4 route del default" in net and "while ip -6 route del default" in net


def test_ipv4_only_host_has_no_ipv6_anything() -> None:
    plan = mx_routing_plan()
    rendered = files(plan, "relay")
    assert "::" not in rendered["/etc/testbed/net.sh"].replace("ip -6 route del default", "")
    assert rendered["/etc/testbed/resolv.conf"].count("nameserver") == 1
    assert "nameserver 198.18.1.53" in rendered["/etc/testbed/resolv.conf"]
    assert "::1" not in rendered["/etc/testbed/hosts"]


def test_router_keeps_ipv4_off_the_ipv6_only_segment() -> None:
    plan = mx_routing_plan()
    net = files(plan, "router")["/etc/testbed/net.sh"]
    assert net.count("ip -4 addr flush") == 1
    assert "prohibit 198.18.2.1" not in net  # no IPv4 on that segment at all
    assert "prohibit 198.18.3.1" in net


def test_dual_host_resolves_over_both_families() -> None:
    plan = mx_routing_plan()
    resolv = files(plan, "mx30")["/etc/testbed/resolv.conf"]
    assert "nameserver 198.18.1.53" in resolv and "nameserver 2001:db8:1::53" in resolv


def test_dns_server_gets_its_zone_config() -> None:
    import json

    plan = mx_routing_plan()
    cfg = json.loads(files(plan, "dns")["/etc/testbed/dns.json"])
    assert cfg["listen"] == ["198.18.1.53", "2001:db8:1::53"]
    names = {(r["name"], r["type"]) for z in cfg["zones"] for r in z["records"]}
    assert ("mx20.brainbird.nl.", "AAAA") in names and ("mx20.brainbird.nl.", "A") not in names
