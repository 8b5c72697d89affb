"""RFC 4941 temporary addresses against a relay that permits hosts by address (slide 30), on real containers.

Each MTA as the relay, on bookworm and on trixie: the broken and the fixed lab
run side by side once per (suite, MTA) and are kept up while the tests look
into them.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest
from conftest import TOPOLOGIES, LiveLab, kept_labs
from helpers import explain

from testbed.model import load_topology

SUITES = ("bookworm", "trixie")
MTAS = ("postfix", "exim", "sendmail")
#: What each relay says when it refuses to relay (the client's last reply).
REFUSAL = {
    "postfix": "554 5.7.1 <user@example.net>: Relay access denied",
    "exim": "550 relay not permitted",
    "sendmail": "550 5.7.1 <user@example.net>... Relaying denied",
}


@pytest.fixture(scope="module", params=[(s, m) for s in SUITES for m in MTAS], ids=lambda p: f"{p[0]}-{p[1]}")
def privacy(request, docker_client, tmp_path_factory) -> Iterator[dict[str, LiveLab]]:
    suite, mta = request.param
    topologies = [
        load_topology(TOPOLOGIES / "privacy-addresses.yaml", v, {"suite": suite, "hosts.relay.software": mta})
        for v in ("broken", "fixed")
    ]
    with kept_labs(docker_client, tmp_path_factory, topologies, key=lambda r: r.plan.variant) as live:
        yield live


def _temporary(lab: LiveLab) -> list[ipaddress.IPv6Address]:
    prefix = lab.plan.segments["users"].subnet_v6
    out = lab.host("client").check_output("ip -6 -o addr show to %s scope global temporary", str(prefix))
    return [ipaddress.ip_address(line.split()[3].split("/")[0]) for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("variant", ["broken", "fixed"])
def test_privacy_addresses_verdict_holds(privacy, variant) -> None:
    result = privacy[variant].result
    assert result.passed, explain(result)


@pytest.mark.parametrize("variant", ["broken", "fixed"])
def test_the_connection_leaves_from_the_kernels_temporary_address(privacy, variant) -> None:
    lab = privacy[variant]
    temporary = _temporary(lab)
    assert temporary, "the client has no temporary address"
    got = lab.result.clients["submit"].connected
    assert got is not None and got.family == "ipv6"
    source = ipaddress.ip_address(got.source)
    assert source in temporary and source in lab.plan.segments["users"].subnet_v6
    assert str(source) not in {str(a) for a in lab.plan.hosts["client"].addresses()}
    # The relay saw the same address.
    assert str(source) in lab.mail_log("relay").replace("IPv6:", "")


def test_the_relay_refuses_in_its_own_words(privacy) -> None:
    lab = privacy["broken"]
    mta = lab.plan.hosts["relay"].software
    outcome = lab.result.clients["submit"].outcome
    assert not outcome.ok and REFUSAL[mta] in outcome.reply, outcome.reply


def test_advertisements_stay_inside_the_segment(privacy, docker_client) -> None:
    """No default route from the advertisements, and nothing else on the segment configures from them."""
    lab = privacy["broken"]
    assert lab.host("client").check_output("ip -6 route show default") == ""
    assert lab.host("client").check_output("ip -4 route show default") == ""
    users = lab.plan.segments["users"]
    # The router advertises but takes no address of its own from the prefix.
    router = lab.host("router").check_output("ip -6 -o addr show to %s", str(users.subnet_v6))
    assert [line.split()[3] for line in router.splitlines()] == [f"{lab.plan.hosts['router'].interfaces[0].ipv6}/64"]
    # The machine's bridge (the engine sets accept_ra=0 there) holds only its gateway address. Read in
    # the engine's own network namespace (a nested engine's bridges are not the host's).
    image = docker_client.containers.get(lab.plan.hosts["router"].container).image.id
    bridge = docker_client.containers.run(image, ["ip", "-6", "-o", "addr", "show", "dev", users.bridge, "scope",
                                                  "global"], network_mode="host", remove=True).decode()
    assert [line.split()[3] for line in bridge.splitlines()] == [f"{users.gateway('ipv6')}/64"]
