"""Rule 9 against round robin (study slides 7-8) on real containers, bookworm and trixie (glibc 2.36, 2.41).

Both variants run side by side; every check reads the servers' own logs as
joined to the clients' captures (connections.jsonl, result.json).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import TOPOLOGIES, LiveLab, kept_labs
from helpers import explain

from testbed.model import load_topology, software_everywhere
from testbed.source import load_yaml

SUITES = ("bookworm", "trixie")


@pytest.fixture(scope="module", params=SUITES)
def round_robin(request, docker_client, tmp_path_factory) -> Iterator[dict[str, LiveLab]]:
    topologies = [load_topology(TOPOLOGIES / "round-robin.yaml", v, {"suite": request.param})
                  for v in ("broken", "fixed")]
    with kept_labs(docker_client, tmp_path_factory, topologies, key=lambda r: r.plan.variant) as live:
        yield live


@pytest.fixture(scope="module", params=("exim", "sendmail"))
def other_mta(request, docker_client, tmp_path_factory) -> Iterator[LiveLab]:
    """The broken lab with Exim or Sendmail on every MTA host: the relay and the servers' logs."""
    path = TOPOLOGIES / "round-robin.yaml"
    overrides = {"suite": "bookworm", **software_everywhere(load_yaml(path).data, request.param)}
    with kept_labs(docker_client, tmp_path_factory, [load_topology(path, "broken", overrides)],
                   key=lambda r: r.plan.variant) as live:
        yield live["broken"]


def test_round_robin_with_exim_or_sendmail(other_mta) -> None:
    """Exim's +smtp_connection lines (with ports) and Sendmail's "connect from" (times only) count alike."""
    result = other_mta.result
    assert result.passed, explain(result)
    runs = [c for c in result.clients.values() if c.run is not None]
    assert runs and all(c.received_by_connected == c.hosts_by_address[c.connected.address] for c in runs)


@pytest.mark.parametrize("variant", ["broken", "fixed"])
def test_round_robin_verdict_holds(round_robin, variant) -> None:
    result = round_robin[variant].result
    assert result.passed, explain(result)


def test_every_connection_is_found_in_exactly_one_servers_log(round_robin) -> None:
    """The join of capture and server log: each run's connection is claimed by the server it was sent to."""
    result = round_robin["broken"].result
    data = json.loads((result.run_dir.path / "result.json").read_text())
    logged = [json.loads(line) for line in (result.run_dir.path / "connections.jsonl").read_text().splitlines()]
    runs = [c for c in data["clients"].values() if c["step"] != c["id"]]
    assert len(runs) == 150
    relay = {str(a) for a in result.plan.hosts["relay"].addresses()}
    for run in runs:
        got = run["connected"]
        assert got["received_by"] == got["host"], run["id"]  # the log agrees with where the client sent it
        assert got["source"] and got["source_port"]
    # The relay's own deliveries to the MX hosts and the submissions it received apart:
    from_clients = [c for c in logged if c["client_address"] not in relay and c["host"] != "relay"]
    ports = Counter((c["client_address"], c["client_port"]) for c in from_clients)
    assert all(n == 1 for n in ports.values())  # Postfix logged each connection once, with its port
    assert len(from_clients) == 150


def test_glibc_and_c_ares_orders_are_recorded_per_run(round_robin) -> None:
    clients = round_robin["broken"].result.clients
    glibc = [r for r in clients.values() if r.step == "office-glibc"]
    cares = [r for r in clients.values() if r.step == "office-cares"]
    assert len(glibc) == len(cares) == 30
    assert all(r.trace.lookups and r.trace.lookups[0].resolver == "getaddrinfo" for r in glibc)
    assert all(r.trace.lookups and r.trace.lookups[0].resolver == "c-ares" for r in cares)
    assert all((r.trace.resolver or {}).get("library", "").startswith("c-ares ") for r in cares)
    # The DNS server's rotation reached the clients: c-ares saw all three orders of the AAAA set ...
    assert len({tuple(r.trace.resolver["addresses"]) for r in cares}) >= 3
    # ... and both resolvers still put the server in the client's /64 first.
    mx_a = {str(a) for a in round_robin["broken"].result.plan.hosts["mx-a"].addresses()}
    assert {r.resolved[0] for r in glibc + cares} <= mx_a
