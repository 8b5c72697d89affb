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
from testbed.adapters import mta_adapter
from testbed.errors import DockerUnavailable
from testbed.model import load_topology, software_everywhere, variant_names
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

    def mail_log(self, name: str) -> str:
        """The host's MTA log, wherever its software writes it."""
        return self.host(name).file(mta_adapter(self.plan.hosts[name].software).mail_log).content_string

    def queue(self, name: str) -> list:
        adapter = mta_adapter(self.plan.hosts[name].software)
        return adapter.parse_queue(self.host(name).check_output(adapter.queue_command()))


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


#: The keys of the labs `labs_with` brings up.
STUDY_VARIANTS = [("mx-routing", "broken"), ("mx-routing", "fixed"), ("relay-bounce", "broken"), ("relay-bounce", "fixed")]


def labs_with(software: str):
    """A module-scoped fixture: both study reproductions, every variant, `software` on every MTA host."""

    @pytest.fixture(scope="module")
    def fixture(docker_client, tmp_path_factory) -> Iterator[dict[tuple[str, str], LiveLab]]:
        topologies = all_variants(
            ("mx-routing", "relay-bounce"),
            lambda name: software_everywhere(load_yaml(TOPOLOGIES / f"{name}.yaml").data, software),
        )
        with kept_labs(docker_client, tmp_path_factory, topologies) as live:
            yield live

    return fixture


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
