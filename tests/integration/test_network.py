"""The network fabric: single-stack hosts really are single-stack, and nothing leaves the lab."""

from __future__ import annotations

import pytest

HOSTS = ("router", "dns", "client", "relay", "mail", "mx10", "mx20", "mx30", "bb-imap", "sk-imap")


def test_ipv4_only_host_has_no_ipv6_at_all(mx_broken) -> None:
    relay = mx_broken.host("relay")
    assert relay.check_output("cat /proc/sys/net/ipv6/conf/all/disable_ipv6") == "1"
    assert relay.check_output("ip -6 -o addr show") == ""
    res = relay.run("ip -6 route get %s", mx_broken.address("mx10", "ipv6"))
    assert res.rc != 0


def test_ipv6_only_host_has_no_ipv4_address_or_route(mx_broken) -> None:
    mx20 = mx_broken.host("mx20")
    v4 = mx20.check_output("ip -4 -o addr show").splitlines()
    assert len(v4) == 1 and " lo " in v4[0]
    assert mx20.check_output("ip -4 route show") == ""
    res = mx20.run("ip -4 route get %s", mx_broken.address("mx10", "ipv4"))
    assert res.rc != 0 and "unreachable" in res.stderr.lower()


@pytest.mark.parametrize("name", HOSTS)
def test_no_default_route_and_only_the_lab_dns(mx_broken, name: str) -> None:
    host = mx_broken.host(name)
    assert host.check_output("ip -4 route show default") == ""
    assert host.check_output("ip -6 route show default 2>/dev/null || true") == ""
    servers = [line.split()[1] for line in host.file("/etc/resolv.conf").content_string.splitlines()
               if line.startswith("nameserver")]
    dns_addrs = {str(a) for a in mx_broken.plan.hosts["dns"].addresses()}
    assert servers and set(servers) <= dns_addrs


@pytest.mark.parametrize("name", ("relay", "mx20", "router"))
def test_nothing_outside_the_lab_is_reachable(mx_broken, name: str) -> None:
    host = mx_broken.host(name)
    for target in ("203.0.113.80", "192.0.2.1", "10.255.255.53", "2001:4860:4860::8888", "fd00::1"):
        res = host.run("ip route get %s", target)
        assert res.rc != 0, f"{name} has a route to {target}: {res.stdout}"
    # the Docker bridge (the machine itself) is on-link but routed to prohibit
    gw = str(mx_broken.plan.segments[mx_broken.plan.hosts[name].interfaces[0].segment].gateway("ipv6" if name == "mx20" else "ipv4"))
    assert host.run("ip route get %s", gw).rc != 0


def test_routers_forward_between_segments_per_family(mx_broken) -> None:
    relay, mx20 = mx_broken.host("relay"), mx_broken.host("mx20")
    # IPv4-only relay -> dual-stack mx30 over IPv4, through the router
    assert relay.run("nc -z -w 2 %s 25", mx_broken.address("mx30", "ipv4")).rc == 0
    # IPv6-only mx20 -> mx30 over IPv6
    assert mx20.run("nc -z -w 2 %s 25", mx_broken.address("mx30", "ipv6")).rc == 0
    # ...but the IPv4-only and IPv6-only segments cannot talk at all
    assert relay.run("nc -z -w 2 %s 25", mx_broken.address("mx20", "ipv6")).rc != 0


def test_no_published_ports_and_no_nat(docker_client, mx_broken) -> None:
    for host in mx_broken.plan.hosts.values():
        attrs = docker_client.api.inspect_container(host.container)
        assert not attrs["HostConfig"]["PortBindings"]
    for seg in mx_broken.plan.segments.values():
        net = docker_client.api.inspect_network(seg.network)
        assert net["Options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
        assert net["Labels"]["testbed.run"] == mx_broken.plan.run_id


def test_lab_dns_answers_only_what_the_topology_says(mx_broken) -> None:
    client = mx_broken.host("client")
    assert client.check_output("dig +short AAAA mx20.brainbird.nl") == mx_broken.address("mx20", "ipv6")
    assert client.check_output("dig +short A mx20.brainbird.nl") == ""
    assert "status: NXDOMAIN" in client.check_output("dig A example.com")
    mx = client.check_output("dig +short MX brainbird.nl").splitlines()
    assert sorted(mx) == ["10 mx10.brainbird.nl.", "20 mx20.brainbird.nl.", "30 mx30.brainbird.nl."]


def test_a_container_outside_the_lab_cannot_reach_into_it(docker_client, mx_broken) -> None:
    """The opening made for the lab's routers (trusted lab bridges on 28.2+) lets nothing else in.

    An ordinary container on the engine's default bridge, as any user's, has a
    default route to the machine, which has a route to every lab bridge. The
    engine must drop what it sends into the lab: 20.10 in its isolation chains,
    28.2+ in its direct-access rules. The DNS server's own log is the witness
    (a reply could not come back anyway: lab hosts have no route out).
    """
    import secrets

    from testbed.adapters.dns import QUERY_LOG
    from testbed.plan import LABEL_RUN

    dns_v4 = mx_broken.address("dns", "ipv4")
    mx10_v4 = mx_broken.address("mx10", "ipv4")
    api = docker_client.api
    outsider = api.create_container(
        f"testbed/base:{mx_broken.plan.suite}", command=["sleep", "infinity"], entrypoint=[],
        labels={LABEL_RUN: "outsider-" + secrets.token_hex(4)}, host_config=api.create_host_config(network_mode="bridge"),
    )
    try:
        api.start(outsider["Id"])
        outsider_ip = api.inspect_container(outsider["Id"])["NetworkSettings"]["IPAddress"]
        assert outsider_ip, "the outsider got no address on the default bridge"

        def run(cmd: str) -> int:
            ex = api.exec_create(outsider["Id"], ["sh", "-c", cmd])
            api.exec_start(ex["Id"])
            return api.exec_inspect(ex["Id"])["ExitCode"]

        assert run(f"ip route get {dns_v4}") == 0  # it has a way there: only the engine can stop it
        assert run(f"dig +tries=2 +time=2 @{dns_v4} A outsider-probe.brainbird.nl") != 0
        assert run(f"nc -z -w 2 {mx10_v4} 25") != 0
        log = mx_broken.host("dns").file(QUERY_LOG).content_string
        assert "outsider-probe" not in log and outsider_ip not in log
    finally:
        api.remove_container(outsider["Id"], force=True)


NET_ADMIN_BIT = 1 << 12  # CAP_NET_ADMIN in /proc/PID/status's CapBnd


@pytest.mark.parametrize(("name", "daemon"), [("mx10", "master"), ("bb-imap", "dovecot"), ("dns", "python3")])
def test_services_run_without_net_admin(mx_broken, name: str, daemon: str) -> None:
    """A daemon (and anything it starts) cannot add a default route back or undo the sealing."""
    host = mx_broken.host(name)
    pids = host.check_output("pgrep -x %s", daemon).split()
    assert pids, f"no {daemon} process on {name}"
    for pid in pids:
        bounding = int(host.check_output("awk '/^CapBnd/ {print $2}' /proc/%s/status", pid), 16)
        assert not bounding & NET_ADMIN_BIT, f"{daemon} ({pid}) on {name} may still change the network"
    # ...while the testbed's own commands (docker exec) keep it, for net.sh on the next start:
    assert int(host.check_output("awk '/^CapBnd/ {print $2}' /proc/self/status"), 16) & NET_ADMIN_BIT


@pytest.mark.parametrize("name", ("relay", "mx20", "mx10", "router"))
def test_dockers_embedded_dns_answers_nothing(mx_broken, name: str) -> None:
    res = mx_broken.host(name).run("dig +time=2 +tries=1 @127.0.0.11 mx10.brainbird.nl")
    assert res.rc != 0 and "connection refused" in res.stdout


@pytest.mark.parametrize("name", ("mx20", "mx10", "client"))
def test_the_bridges_link_local_addresses_are_not_reachable(docker_client, mx_broken, name: str) -> None:
    """The machine's side of each bridge (fe80::1, and its EUI-64 address) is not part of the lab."""
    host = mx_broken.host(name)
    ifname = host.check_output("ip -o -6 addr show to %s | awk '{print $2; exit}'", mx_broken.address(name, "ipv6"))
    net = mx_broken.plan.segments[mx_broken.plan.hosts[name].interfaces[0].segment].network
    bridge = docker_client.api.inspect_network(net)["Options"]["com.docker.network.bridge.name"]
    for target in ("fe80::1", *host_link_locals(bridge)):
        res = host.run("ping -c 1 -W 1 %s%%%s", target, ifname)
        assert res.rc != 0, f"{name} reaches {target} on {ifname}"
    # Neighbour discovery, which needs link-local, still works: the lab's own IPv6 traffic flows.
    assert host.run("ping -c 1 -W 2 %s", mx_broken.address("dns", "ipv6")).rc == 0


def host_link_locals(bridge: str) -> list[str]:
    """The bridge's link-local addresses as the machine sees them (where the engine is local)."""
    import subprocess

    res = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", bridge, "scope", "link"],
                         capture_output=True, text=True)
    return [line.split()[3].split("/")[0] for line in res.stdout.splitlines()]


def test_every_container_has_memory_and_process_limits(docker_client, mx_broken) -> None:
    for host in mx_broken.plan.hosts.values():
        config = docker_client.api.inspect_container(host.container)["HostConfig"]
        assert config["Memory"] > 0 and config["PidsLimit"] and config["PidsLimit"] > 0, host.name
