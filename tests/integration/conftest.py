"""Integration fixtures: real labs on the real Docker engine.

The reproductions run once per session, side by side, and are kept up while
the tests look into their containers with testinfra; they are torn down at
the end of the session. Without a Docker engine every test here fails with
the reason (nothing is skipped).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra

from testbed import fabric
from testbed.errors import DockerUnavailable
from testbed.model import load_topology, variant_names
from testbed.runner import (
    RunOptions,
    RunResult,
    ensure_images_for,
    plan_runs,
    run_plans,
)
from testbed.source import load_yaml

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"
REPRODUCTIONS = ("mx-routing", "relay-bounce", "dns-servfail")


@dataclass
class LiveLab:
    result: RunResult

    @property
    def plan(self):
        return self.result.plan

    def host(self, name: str):
        """A testinfra host for one lab container."""
        return testinfra.get_host(f"docker://{self.plan.hosts[name].container}")

    def address(self, name: str, family: str) -> str:
        return str(self.plan.hosts[name].addresses(family)[0])


@pytest.fixture(scope="session")
def docker_client():
    try:
        return fabric.connect()
    except DockerUnavailable as exc:
        pytest.fail(f"integration tests need a Docker engine: {exc}", pytrace=False)


def all_variants(names, overrides: dict | None = None) -> list:
    """Every variant of the named topologies, with the same overrides applied to each."""
    return [
        load_topology(TOPOLOGIES / f"{name}.yaml", v, overrides(name) if callable(overrides) else overrides)
        for name in names
        for v in variant_names(load_yaml(TOPOLOGIES / f"{name}.yaml").data)
    ]


def mta_everywhere(software: str):
    """Overrides putting `software` on every MTA host of a topology."""

    def overrides(name: str) -> dict[str, str]:
        hosts = load_yaml(TOPOLOGIES / f"{name}.yaml").data["hosts"]
        return {f"hosts.{h}.software": software for h, spec in hosts.items() if spec.get("kind") == "mta"}

    return overrides


@contextmanager
def kept_labs(docker_client, tmp_path_factory, topologies, key=lambda r: (r.plan.name, r.plan.variant)):
    """Run labs side by side, keep them up for inspection, and always remove them after."""
    plans = plan_runs(docker_client, topologies)
    try:
        images = ensure_images_for(plans)
        runs_root = Path(os.environ.get("TESTBED_TEST_RUNS") or tmp_path_factory.mktemp("runs"))
        results = run_plans(docker_client, plans, RunOptions(runs_root=runs_root, keep=True), images)
        yield {key(r): LiveLab(r) for r in results}
    finally:
        for plan in plans:
            fabric.teardown(docker_client, plan.run_id)


@pytest.fixture(scope="session")
def labs(docker_client, tmp_path_factory) -> Iterator[dict[tuple[str, str], LiveLab]]:
    """Every variant of every reproduction with the topologies' own MTAs, kept up for inspection."""
    with kept_labs(docker_client, tmp_path_factory, all_variants(REPRODUCTIONS)) as live:
        yield live


@pytest.fixture(scope="session")
def mx_broken(labs) -> LiveLab:
    return labs[("mx-routing", "broken")]


@pytest.fixture(scope="session")
def mx_fixed(labs) -> LiveLab:
    return labs[("mx-routing", "fixed")]


@pytest.fixture(scope="session")
def rb_broken(labs) -> LiveLab:
    return labs[("relay-bounce", "broken")]


@pytest.fixture(scope="session")
def rb_fixed(labs) -> LiveLab:
    return labs[("relay-bounce", "fixed")]


@pytest.fixture(scope="session")
def dns_lab(labs) -> LiveLab:
    return labs[("dns-servfail", "servfail")]
