"""The study's client findings on real containers: no IPv4 fallback (slide 23), the A/AAAA race (24-26).

Each reproduction runs every variant on bookworm and on trixie. The race lab
runs on its own (its timing is the point); the no-fallback labs run side by side.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from conftest import TOPOLOGIES, LiveLab, kept_labs
from helpers import explain

from testbed.model import load_topology

SUITES = ("bookworm", "trixie")


def _labs(docker_client, tmp_path_factory, name: str, variants: tuple[str, ...], suite: str):
    topologies = [load_topology(TOPOLOGIES / f"{name}.yaml", v, {"suite": suite}) for v in variants]
    return kept_labs(docker_client, tmp_path_factory, topologies, key=lambda r: r.plan.variant)


@pytest.fixture(scope="module", params=SUITES)
def no_fallback(request, docker_client, tmp_path_factory) -> Iterator[dict[str, LiveLab]]:
    with _labs(docker_client, tmp_path_factory, "no-fallback", ("broken", "fixed"), request.param) as live:
        yield live


@pytest.fixture(scope="module", params=SUITES)
def race(request, docker_client, tmp_path_factory) -> Iterator[dict[str, LiveLab]]:
    labs: dict[str, LiveLab] = {}
    # One at a time: the sweep measures DNS timing, a second lab beside it would only add noise.
    for variant in ("race", "fixed"):
        with _labs(docker_client, tmp_path_factory, "resolver-race", (variant,), request.param) as live:
            labs.update(live)
    yield labs


@pytest.mark.parametrize("variant", ["broken", "fixed"])
def test_no_fallback_verdict_holds(no_fallback, variant) -> None:
    result = no_fallback[variant].result
    assert result.passed, explain(result)


@pytest.mark.parametrize("variant", ["race", "fixed"])
def test_resolver_race_verdict_holds(race, variant) -> None:
    result = race[variant].result
    assert result.passed, explain(result)


def test_old_and_new_swaks_side_by_side(no_fallback) -> None:
    """One lab holds bookworm's and trixie's swaks, whatever the lab's suite: each reports its own version."""
    clients = no_fallback["broken"].result.clients
    assert "20201014" in clients["bh-swaks-old"].version
    assert "20240103" in clients["bh-swaks-new"].version


def test_client_evidence_lands_in_the_run_directory_and_result(no_fallback) -> None:
    result = no_fallback["broken"].result
    data = json.loads((result.run_dir.path / "result.json").read_text())
    curl = data["clients"]["bh-curl"]
    assert curl["resolved"][0].count(":") >= 2 and "." in curl["resolved"][1]  # IPv6 first, then IPv4
    assert [a["family"] for a in curl["attempts"]][:2] == ["ipv6", "ipv4"]
    assert curl["attempts"][0]["result"] == "timeout" and curl["connected"]["family"] == "ipv4"
    assert curl["connected"]["host"] == "mail"
    # curl's Happy Eyeballs: IPv4 starts before the IPv6 attempt's connect timeout is up ...
    v6, v4 = curl["attempts"][0], curl["attempts"][1]
    assert v4["started"] < v6["started"] + curl["timeout_s"]
    # ... while trixie's swaks (sequential) starts IPv4 only once the IPv6 attempt timed out.
    swaks = data["clients"]["bh-swaks-new"]
    assert swaks["attempts"][1]["started"] >= swaks["attempts"][0]["started"] + 0.9 * swaks["timeout_s"]
    assert (result.run_dir.path / "clients" / "bh-curl.json").is_file()
    assert "outlook-model" in data["clients"]["bh-outlook"]["software"]
    assert data["clients"]["bh-outlook"]["model"]["of"]


def test_refused_is_a_reset_and_blackhole_a_silence(no_fallback) -> None:
    clients = no_fallback["broken"].result.clients
    assert [a.result for a in clients["rf-python"].attempts] == ["refused", "connected"]
    assert clients["bh-python"].attempts[0].result == "timeout"


def test_the_model_resolver_asks_both_types_at_once(race) -> None:
    result = race["race"].result
    model = result.clients["mac-v6only-1000"].trace.resolver
    assert model["model"] == "macos-10.6" and "Libinfo" in model["source"]
    assert {q["type"] for q in model["queries"]} == {"A", "AAAA"}
    assert model["addresses"] == [] and model["error"] == "EAI_NONAME"
