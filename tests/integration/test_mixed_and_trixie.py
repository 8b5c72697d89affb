"""Different MTAs in one lab, and the same lab on Debian trixie (Exim 4.98, Sendmail 8.18, Dovecot 2.4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import TOPOLOGIES, LiveLab, kept_labs
from helpers import explain, mailbox

from testbed.model import load_topology

MIXED = {"hosts.relay.software": "exim", "hosts.mx10.software": "sendmail", "hosts.mail.software": "postfix"}


@pytest.fixture(scope="module")
def mixed_labs(docker_client, tmp_path_factory) -> Iterator[dict[tuple[str, str], LiveLab]]:
    topologies = [
        load_topology(TOPOLOGIES / "relay-bounce.yaml", variant, {**MIXED, "suite": suite})
        for suite, variant in (("bookworm", "broken"), ("bookworm", "fixed"), ("trixie", "fixed"))
    ]
    with kept_labs(docker_client, tmp_path_factory, topologies, key=lambda r: (r.plan.suite, r.plan.variant)) as live:
        yield live


@pytest.mark.parametrize("key", [("bookworm", "broken"), ("bookworm", "fixed"), ("trixie", "fixed")])
def test_verdict_holds(mixed_labs, key) -> None:
    result = mixed_labs[key].result
    assert result.passed, explain(result)


def test_hops_are_followed_across_different_mtas(mixed_labs) -> None:
    lab = mixed_labs[("bookworm", "fixed")]
    m1, m2 = lab.result.histories["m1"], lab.result.histories["m2"]
    assert m2.path == ["relay", "mx10"] and m2.state == "delivered"  # Exim -> Sendmail -> Dovecot
    assert m1.dsns[0].path == ["relay", "mail"] and m1.dsns[0].delivered  # Exim bounce -> Postfix -> Dovecot
    assert lab.host("relay").check_output("exim4 -bV | head -1").startswith("Exim version 4.96")


def test_trixie_runs_the_new_releases(mixed_labs) -> None:
    lab = mixed_labs[("trixie", "fixed")]
    versions = lab.result.versions
    assert versions["exim"].startswith("4.98")
    assert versions["sendmail"].startswith("8.18")
    assert versions["postfix"].startswith("3.10")
    assert versions["dovecot"].startswith("2.4")
    # Exim 4.97+ queue ids are 23 characters (4.96: 16); the tracker follows both.
    assert len(lab.result.histories["m1"].hops[0].queue_id) == 23
    [dsn] = mailbox(lab, "user@skimbee.net")
    assert lab.result.histories["m1"].message_id in dsn
