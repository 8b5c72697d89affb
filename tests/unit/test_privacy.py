"""Router advertisements, RFC 4941 temporary addresses and per-host relay permission (no Docker)."""

from __future__ import annotations

import ipaddress
import json
import textwrap
from pathlib import Path

import pytest

from testbed.adapters.sendmail import access_key
from testbed.clientrun import ClientOutcome, ClientResult
from testbed.clienttrace import Attempt, ClientTrace, Lookup, parse_trace
from testbed.composefile import compose_file
from testbed.errors import TopologyError
from testbed.model import load_topology
from testbed.plan import ENDPOINT_SYSCTLS, EngineCaps, plan_lab
from testbed.render import host_files, lab_files
from testbed.verdict import Observation, evaluate

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
TRACE = Path(__file__).resolve().parents[1] / "data" / "clients" / "trace"
OLD = EngineCaps((1, 41))  # 20.10
TRIXIE = EngineCaps((1, 45))  # 26.1
NEW = EngineCaps((1, 51))  # 28.5

LAB = """
name: priv
segments:
  users: {family: dual, advertise: true}
  servers: {family: dual}
  v4: {family: ipv4}
hosts:
  router: {kind: router, segments: [users, servers, v4]}
  dns: {kind: dns, segment: servers}
  client: {kind: client, segment: users, privacy_addresses: true}
  other: {kind: client, segment: users}
  relay: {kind: mta, segment: servers, relay_from: {hosts: [client]}}
  mail: {kind: mta, segment: servers}
domains:
  example.org: {relay: relay}
  example.net: {mx: {mail: 10}, mailboxes: [user]}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    with pytest.raises(TopologyError) as info:
        load_topology(write(tmp_path, text))
    return [(p.path, p.message) for p in info.value.problems]


def plan_of(tmp_path: Path, text: str = LAB, caps: EngineCaps = OLD):
    return plan_lab(load_topology(write(tmp_path, text)), "t1", caps)


# --- model ------------------------------------------------------------------------


def test_each_misuse_is_one_clear_problem(tmp_path: Path) -> None:
    found = problems(tmp_path, """
        name: bad
        segments:
          users: {family: dual, advertise: true}
          lonely: {family: dual, advertise: true}
          v4: {family: ipv4, advertise: true}
        hosts:
          router: {kind: router, segments: [users, v4], privacy_addresses: true}
          dns: {kind: dns, segment: users}
          v4host: {kind: client, segment: users, stack: ipv4, privacy_addresses: true}
          nora: {kind: client, segment: lonely, privacy_addresses: true}
          plain: {kind: client, segment: v4, privacy_addresses: true}
          relay: {kind: mta, segment: users, relay_from: {hosts: [nobody, router, dns, dns], segments: [v5, v4, v4]}}
          other: {kind: mta, segment: users, relay_from: {}}
          store: {kind: mailstore, segment: users, relay_from: {hosts: [dns]}}
        domains:
          example.org: {relay: relay}
    """)
    # "nora" sits on an advertised segment without a router: that is the segment's problem, said once.
    assert [p for p in found if p[0].startswith("hosts.nora")] == [
        ("hosts.nora", "cannot reach the DNS server dns over any of its address families")]
    assert [p for p in found if not p[0].startswith("hosts.nora")] == [
        ("segments.lonely.advertise", "router advertisements come from a router on the segment, and 'lonely' has none"),
        ("segments.v4.advertise", "segment 'v4' carries no IPv6: there is no prefix to advertise"),
        ("hosts.router.privacy_addresses",
         "a router forwards and ignores router advertisements: temporary addresses are for hosts"),
        ("hosts.v4host.privacy_addresses", "v4host has no IPv6 address"),
        ("hosts.plain.privacy_addresses", "plain has no IPv6 address"),
        ("hosts.relay.relay_from.hosts[0]",
         "unknown host 'nobody', expected one of: dns, nora, other, plain, relay, router, store, v4host"),
        ("hosts.relay.relay_from.hosts[1]", "router is a router with an address on every segment: name a segment"),
        ("hosts.relay.relay_from.hosts[3]", "host 'dns' is listed twice"),
        ("hosts.relay.relay_from.segments[0]", "unknown segment 'v5', expected one of: lonely, users, v4"),
        ("hosts.relay.relay_from.segments[2]", "segment 'v4' is listed twice"),
        ("hosts.other.relay_from",
         "other is no domain's relay (set domains.DOMAIN.relay: other), so nobody relays through it"),
        ("hosts.other.relay_from", "name at least one host or segment that may relay"),
        ("hosts.store.relay_from", "only an mta host relays mail"),
    ]


def test_privacy_addresses_need_an_advertised_segment(tmp_path: Path) -> None:
    found = problems(tmp_path, LAB.replace("users: {family: dual, advertise: true}", "users: {family: dual}"))
    assert found == [("hosts.client.privacy_addresses",
                      "temporary addresses come from router advertisements: set segments.users.advertise")]


def test_the_shipped_topology_validates_both_variants() -> None:
    broken = load_topology(TOPOLOGIES / "privacy-addresses.yaml")
    fixed = load_topology(TOPOLOGIES / "privacy-addresses.yaml", "fixed")
    assert broken.hosts["relay"].relay_from.hosts == ["client"]
    assert fixed.hosts["relay"].relay_from.hosts == [] and fixed.hosts["relay"].relay_from.segments == ["users"]


# --- plan ---------------------------------------------------------------------------


def test_the_client_takes_temporary_addresses_but_no_default_route(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    client = plan.hosts["client"]
    assert client.privacy_addresses
    assert client.interface_sysctls == {
        "net.ipv6.conf.IFNAME.accept_ra": "1",
        "net.ipv6.conf.IFNAME.autoconf": "1",
        "net.ipv6.conf.IFNAME.use_tempaddr": "2",
        "net.ipv6.conf.IFNAME.accept_ra_defrtr": "0",
    }
    # Every other host on the advertised segment ignores the advertisements; elsewhere nothing changes.
    assert plan.hosts["other"].interface_sysctls == {"net.ipv6.conf.IFNAME.accept_ra": "0"}
    assert plan.hosts["relay"].interface_sysctls == {} and plan.hosts["router"].interface_sysctls == {}
    assert plan.segments["users"].advertise and not plan.segments["servers"].advertise


@pytest.mark.parametrize("caps", [OLD, TRIXIE])
def test_engines_before_api_1_46_get_the_interface_sysctls_for_eth0(tmp_path: Path, caps: EngineCaps) -> None:
    client = plan_of(tmp_path, caps=caps).hosts["client"]
    sysctls = client.engine_sysctls(caps)
    assert sysctls["net.ipv6.conf.eth0.use_tempaddr"] == "2" and sysctls["net.ipv6.conf.eth0.accept_ra_defrtr"] == "0"
    assert not any("IFNAME" in k for k in sysctls)
    assert client.endpoint_sysctls(caps) is None


def test_engines_from_api_1_46_get_them_on_the_endpoint(tmp_path: Path) -> None:
    client = plan_of(tmp_path, caps=NEW).hosts["client"]
    assert client.engine_sysctls(NEW) == client.sysctls
    assert client.endpoint_sysctls(NEW) == (
        "net.ipv6.conf.IFNAME.accept_ra=1,net.ipv6.conf.IFNAME.autoconf=1,"
        "net.ipv6.conf.IFNAME.use_tempaddr=2,net.ipv6.conf.IFNAME.accept_ra_defrtr=0")
    assert EngineCaps((1, 45)).endpoint_sysctls is False and EngineCaps((1, 46)).endpoint_sysctls is True


def test_the_compose_file_carries_the_same_sysctls(tmp_path: Path) -> None:
    for caps in (OLD, NEW):
        plan = plan_of(tmp_path, caps=caps)
        files = lab_files(plan)
        data = compose_file(plan, {h.image: h.image for h in plan.hosts.values()}, files, {}, tmp_path)
        service = data["services"]["client"]
        if caps is OLD:
            assert service["sysctls"]["net.ipv6.conf.eth0.use_tempaddr"] == "2"
        else:
            assert "use_tempaddr=2" in service["networks"]["users"]["driver_opts"][ENDPOINT_SYSCTLS]


def test_the_first_router_on_an_advertised_segment_advertises_its_prefix(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, LAB.replace("  dns: {kind: dns", "  router2: {kind: router, segments: [users, servers]}\n"
                                                             "  dns: {kind: dns"))
    (adv,) = plan.hosts["router"].advertisements
    assert adv.segment == "users" and adv.prefix == plan.segments["users"].subnet_v6
    assert adv.address == plan.hosts["router"].interfaces[0].ipv6
    assert plan.hosts["router2"].advertisements == ()


def test_relay_from_permits_planned_addresses_or_prefixes(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    client = plan.hosts["client"]
    assert plan.hosts["relay"].roles.relay_networks == tuple(ipaddress.ip_network(a) for a in client.addresses())
    assert [n.prefixlen for n in plan.hosts["relay"].roles.relay_networks] == [32, 128]
    by_segment = plan_of(tmp_path, LAB.replace("relay_from: {hosts: [client]}", "relay_from: {segments: [users, v4]}"))
    users, v4 = by_segment.segments["users"], by_segment.segments["v4"]
    assert by_segment.hosts["relay"].roles.relay_networks == (users.subnet_v4, users.subnet_v6, v4.subnet_v4)
    # Without relay_from, every lab network may relay, as before.
    default = plan_of(tmp_path, LAB.replace(", relay_from: {hosts: [client]}", ""))
    assert len(default.hosts["relay"].roles.relay_networks) == 5


# --- render ---------------------------------------------------------------------------


def files(plan, host: str) -> dict[str, str]:
    return {f.path: f.content for f in host_files(plan, plan.hosts[host])}


def test_the_router_runs_radvd_without_a_default_route(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    router = files(plan, "router")
    service = router["/etc/testbed/service"]
    prefix, address = plan.segments["users"].subnet_v6, plan.hosts["router"].interfaces[0].ipv6
    assert f"ip -o -6 addr show to {address} " in service
    assert f"prefix {prefix} {{" in service and "AdvAutonomous on;" in service
    assert "MinRtrAdvInterval 3;" in service and "MaxRtrAdvInterval 4;" in service
    assert "AdvDefaultLifetime 0;" in service and "AdvRASolicitedUnicast off;" in service
    assert "radvd.pid" in router["/etc/testbed/ready"]
    # A router on no advertised segment has no service at all.
    quiet = plan_of(tmp_path, LAB.replace("users: {family: dual, advertise: true}", "users: {family: dual}")
                    .replace(", privacy_addresses: true", ""))
    assert "/etc/testbed/service" not in files(quiet, "router")


def test_the_client_waits_for_its_temporary_address(tmp_path: Path) -> None:
    plan = plan_of(tmp_path)
    prefix = plan.segments["users"].subnet_v6
    net = files(plan, "client")["/etc/testbed/net.sh"]
    assert f"ip -6 -o addr show to {prefix} scope global temporary -tentative" in net
    assert 'if [ "$i" -gt 600 ]' in net  # bounded: 600 polls of 50 ms
    assert "temporary -tentative" not in files(plan, "other")["/etc/testbed/net.sh"]


@pytest.mark.parametrize("mta", ["postfix", "exim", "sendmail"])
def test_every_mta_renders_the_permitted_addresses(tmp_path: Path, mta: str) -> None:
    plan = plan_of(tmp_path, LAB.replace("relay: {kind: mta,", f"relay: {{kind: mta, software: {mta},"))
    v4, v6 = plan.hosts["client"].addresses()
    rendered = "\n".join(c for path, c in files(plan, "relay").items() if not path.startswith("/etc/testbed/"))
    users = plan.segments["users"].subnet_v6
    if mta == "postfix":
        assert f"mynetworks = 127.0.0.0/8 [::1]/128 {v4}/32 [{v6}]/128\n" in rendered
    elif mta == "exim":
        assert f"hostlist relay_from_hosts = <; 127.0.0.1 ; ::1 ; {v4}/32 ; {v6}/128\n" in rendered
    else:
        assert f"Connect:{v4}\tRELAY" in rendered
        assert f"Connect:{access_key(ipaddress.ip_network(v6))}\tRELAY" in rendered
    assert str(users) not in rendered.replace(f"{v6}", "")


def test_sendmail_keys_for_a_single_address() -> None:
    assert access_key(ipaddress.ip_network("2001:db8:b::10/128")) == "IPv6:2001:db8:b:0:0:0:0:10"
    assert access_key(ipaddress.ip_network("198.18.11.10/32")) == "198.18.11.10"


# --- trace and verdict ------------------------------------------------------------------


def test_a_connection_from_the_temporary_address_is_the_clients() -> None:
    text = (TRACE / "bookworm-swaks-privacy-relay-denied.json").read_text()
    trace = parse_trace(text, {"198.18.11.10", "2001:db8:b::10"})  # the planned ones only
    (attempt,) = trace.attempts
    assert attempt.result == "connected" and attempt.address == "2001:db8:c::25"
    assert attempt.source == "2001:db8:b:0:7f81:1621:f18b:4177"
    assert trace.to_dict()["connected"]["source"] == attempt.source
    assert "Relay access denied" in trace.stdout


def _result(source: str) -> ClientResult:
    attempt = Attempt("2001:db8:2::25", "ipv6", 25, 1000.0, 1000.01, "connected", 40000, 1, source)
    trace = ClientTrace(started=1000.0, ended=1000.5, rc=24, stdout="", stderr="",
                        lookups=[Lookup("smtp.example.org", "glibc", 1000.0, 1.0, ["2001:db8:2::25"])],
                        attempts=[attempt])
    return ClientResult(
        id="submit", host="client", software="swaks", version="20201014.0", model_of=None, model_source=None,
        resolver="glibc", resolver_model_of=None, action="submit", protocol="smtp",
        server="smtp.example.org", port=25, family="any", timeout_s=3.0, labels={},
        trace=trace, outcome=ClientOutcome(False, "554 5.7.1 <user@example.net>: Relay access denied"),
    )


def test_the_source_expectation(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, LAB + """
scenario:
  - client: {id: submit, host: client, action: submit, server: relay, to: user@example.net}
expect:
  - client: {step: submit, source: unplanned}
  - client: {step: submit, source: planned}
""")
    planned = str(plan.hosts["client"].addresses("ipv6")[0])
    temporary = str(ipaddress.ip_address(planned) + 0x7F81_1621_F18B_0000)
    for source, statuses in ((temporary, ["pass", "fail"]), (planned, ["fail", "pass"])):
        obs = Observation(histories={}, mailboxes={}, queues={}, dns_queries=[], logs={},
                          clients={"submit": _result(source)})
        checks = evaluate(plan, obs)
        assert [c.status for c in checks] == statuses, [c.detail for c in checks]
    obs = Observation(histories={}, mailboxes={}, queues={}, dns_queries=[], logs={},
                      clients={"submit": _result(temporary)})
    assert f"source: expected a planned address, got {temporary}" in evaluate(plan, obs)[1].detail
    assert json.dumps(_result(temporary).to_dict())  # result.json takes it


def test_relay_from_a_host_permits_its_extra_addresses_too(tmp_path: Path) -> None:
    plan = plan_of(tmp_path, LAB.replace("privacy_addresses: true}", "privacy_addresses: true, addresses: {users: [40]}}"))
    permitted = {str(n) for n in plan.hosts["relay"].roles.relay_networks}
    assert {f"{a}/{a.max_prefixlen}" for a in plan.hosts["client"].addresses()} == permitted
    assert len(permitted) == 4
