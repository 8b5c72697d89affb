"""Teredo- and 6to4-shaped server addresses against real glibc address selection (study slide 30).

Both variants run side by side (their pinned transition-shaped subnets differ),
once on bookworm (glibc 2.36) and once on trixie (glibc 2.41); every test of a
suite reads the same two labs.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator

import pytest
from conftest import TOPOLOGIES, LiveLab, kept_labs
from helpers import explain

from testbed.model import load_topology
from testbed.render import GAI_CONF

#: The lab's suite -> the glibc its Python clients run (bookworm's swaks is 2.36 in both).
GLIBC = {"bookworm": "2.36", "trixie": "2.41"}


@pytest.fixture(scope="module", params=sorted(GLIBC))
def labs(request, docker_client, tmp_path_factory) -> Iterator[tuple[str, dict[str, LiveLab]]]:
    topologies = [load_topology(TOPOLOGIES / "transition-addresses.yaml", v, {"suite": request.param})
                  for v in ("broken", "fixed")]
    with kept_labs(docker_client, tmp_path_factory, topologies, key=lambda r: r.plan.variant) as live:
        yield request.param, live


@pytest.mark.parametrize("variant", ["broken", "fixed"])
def test_transition_verdict_holds(labs, variant) -> None:
    _, live = labs
    result = live[variant].result
    assert result.passed, explain(result)


def test_each_suite_runs_its_own_glibc(labs) -> None:
    suite, live = labs
    lab = live["broken"]
    assert lab.host("py-ter").check_output("getconf GNU_LIBC_VERSION") == f"glibc {GLIBC[suite]}"
    assert lab.host("sw-ter").check_output("getconf GNU_LIBC_VERSION") == "glibc 2.36"


def _families(addresses: list[str]) -> list[str]:
    return ["ipv6" if ":" in a else "ipv4" for a in addresses]


def test_first_family_per_client_and_server(labs) -> None:
    """The whole table docs/clients.md shows, from result.json's clients."""
    _, live = labs
    clients = live["broken"].result.clients
    first = {sid: _families(c.resolved)[0] for sid, c in clients.items() if sid.startswith("ok-")}
    assert first == {
        "ok-nat-teredo": "ipv4", "ok-nat-6to4": "ipv4",
        "ok-nat-rfc-teredo": "ipv4", "ok-nat-rfc-6to4": "ipv4",
        "ok-ter-teredo": "ipv6", "ok-ter-6to4": "ipv4",
        "ok-ter-gd-teredo": "ipv6", "ok-ter-gd-6to4": "ipv4",
        "ok-ter-rfc-teredo": "ipv4", "ok-ter-rfc-6to4": "ipv4",
        "ok-stf-teredo": "ipv4", "ok-stf-6to4": "ipv6",
        "ok-stf-rfc-teredo": "ipv4", "ok-stf-rfc-6to4": "ipv4",
        # c-ares (RFC 6724's tables built in) from the clients with their own transition address:
        "ok-ter-cares-teredo": "ipv4", "ok-stf-cares-6to4": "ipv4",
    }
    teredo = ipaddress.ip_network(str(live["broken"].plan.segments["teredo-srv"].subnet_v6))
    assert ipaddress.ip_address(clients["ok-ter-teredo"].connected.address) in teredo


def test_the_server_sees_the_clients_transition_shaped_source(labs) -> None:
    """Postfix on the Teredo-shaped server logs the client's own Teredo-shaped address: routed, not translated."""
    _, live = labs
    lab = live["broken"]
    log = lab.mail_log("teredo")
    source = lab.address("py-ter", "ipv6")
    assert source.startswith("2001:0:") or source.startswith("2001::")
    assert re.search(rf"connect from \S+\[{re.escape(source)}\]", log), log[-2000:]


def test_the_black_hole_costs_the_transition_first_clients(labs) -> None:
    _, live = labs
    clients = live["broken"].result.clients
    for sid in ("bh-ter-teredo", "bh-stf-6to4"):
        assert [a.result for a in clients[sid].attempts] == ["timeout", "connected"], sid
        assert [a.family for a in clients[sid].attempts] == ["ipv6", "ipv4"], sid
    curl = clients["bh-cu-ter-teredo"]  # Happy Eyeballs: IPv4 starts before the Teredo attempt's timeout is up
    assert [a.family for a in curl.attempts] == ["ipv6", "ipv4"] and curl.connected.family == "ipv4"
    assert curl.attempts[1].started < curl.attempts[0].started + curl.timeout_s
    for sid in ("bh-sw-ter-teredo", "bh-sw-stf-6to4"):
        assert [a.result for a in clients[sid].attempts] == ["timeout"], sid
        assert "timeout" in (clients[sid].outcome.reply or ""), sid


def test_gai_conf_is_glibcs_file_and_survives_a_restart(labs, docker_client) -> None:
    _, live = labs
    lab = live["fixed"]  # its scenario is over; a restart changes nothing it judged
    host = lab.plan.hosts["py-ter-rfc"]
    before = lab.host("py-ter-rfc").file(GAI_CONF).content_string
    assert "precedence ::ffff:0:0/96 35" in before and "label 2001::/32" in before
    # A host without gai_conf keeps the image's file: Debian's, every line a comment (glibc's built-in tables).
    assert lab.host("py-ter").check_output(f"grep -Ecv '^[[:space:]]*(#|$)' {GAI_CONF} || true") == "0"
    docker_client.containers.get(host.container).restart(timeout=1)
    assert lab.host("py-ter-rfc").file(GAI_CONF).content_string == before
