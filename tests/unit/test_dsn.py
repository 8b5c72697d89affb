"""Bounces read as RFC 3464 reports (recorded from real Postfix, Exim and Sendmail labs) and the dsn expectation."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import TopologyError
from testbed.mailbox import parse_message
from testbed.model import load_topology
from testbed.plan import EngineCaps, plan_lab
from testbed.verdict import Observation, evaluate

DATA = Path(__file__).resolve().parents[1] / "data"
TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


@pytest.mark.parametrize("mta,status,diagnostic", [
    ("postfix", "5.1.1", "smtp; 550 5.1.1 <unknown_user@brainbird.nl>: Recipient address rejected: "
                         "User unknown in virtual mailbox table"),
    ("exim", "5.0.0", "smtp; 550 Unrouteable address"),
    ("sendmail", "5.1.1", "SMTP; 550 5.1.1 <unknown_user@brainbird.nl>... User unknown"),
])
def test_each_mtas_bounce_is_parsed(mta: str, status: str, diagnostic: str) -> None:
    msg = parse_message("x", (DATA / mta / "dsn-bookworm.eml").read_text())
    assert msg.is_dsn and msg.dsn is not None
    assert msg.dsn.reporting_mta == "relay.skimbee.net"
    [block] = msg.dsn.recipients
    assert (block.final_recipient, block.action, block.status) == ("unknown_user@brainbird.nl", "failed", status)
    assert block.remote_mta == "mx10.brainbird.nl" and block.diagnostic_code == diagnostic
    assert msg.dsn.returned_message_id and msg.dsn.returned_message_id.startswith("<m1.")
    assert msg.dsn.returned_message_id in msg.refers_to
    assert msg.to_dict()["dsn"]["recipients"][0]["status"] == status


def test_an_ordinary_message_has_no_report() -> None:
    msg = parse_message("x", "From: a@b\nMessage-ID: <x@y>\nSubject: hi\n\nbody\n")
    assert not msg.is_dsn and msg.dsn is None


def judge(tmp_path: Path, mta: str, extra: str) -> list:
    text = (TOPOLOGIES / "relay-bounce.yaml").read_text()
    path = tmp_path / "t.yaml"
    path.write_text(text + extra)
    top = load_topology(path, "fixed", {f"hosts.{h}.software": mta for h in ("relay", "mx10")})
    plan = plan_lab(top, "t1", EngineCaps((1, 41)))
    bounce = parse_message("x", (DATA / mta / "dsn-bookworm.eml").read_text())
    obs = Observation(histories={}, mailboxes={"user@skimbee.net": [bounce], "user@brainbird.nl": []}, queues={},
                      dns_queries=[], logs={}, message_ids={"m1": bounce.dsn.returned_message_id, "m2": "<m2@x>"})
    return [c for c in evaluate(plan, obs) if c.kind == "dsn"]


def test_the_relay_bounce_dsn_expectations_hold_on_each_mtas_real_bounce(tmp_path: Path) -> None:
    for mta in ("postfix", "exim", "sendmail"):
        checks = judge(tmp_path, mta, "")
        assert [c.status for c in checks] == (["n/a", "pass"] if mta == "exim" else ["pass", "pass"]), (mta, checks)


def test_a_wrong_field_fails_with_what_was_there(tmp_path: Path) -> None:
    bad = """
      - dsn: {for: m1, status: 4.4.1, remote_mta: relay, diagnostic: "timed out"}
      - dsn: {for: m2, present: false}
      - dsn: {for: m1, present: false}
"""
    text = (TOPOLOGIES / "relay-bounce.yaml").read_text().replace(
        "        - description: control - mail for a known user is delivered",
        bad.replace("\n      - ", "\n        - ").rstrip("\n") + "\n        - description: control - mail for a known user is delivered", 1)
    path = tmp_path / "t.yaml"
    path.write_text(text)
    top = load_topology(path, "fixed")
    plan = plan_lab(top, "t1", EngineCaps((1, 41)))
    bounce = parse_message("x", (DATA / "postfix" / "dsn-bookworm.eml").read_text())
    obs = Observation(histories={}, mailboxes={"user@skimbee.net": [bounce]}, queues={}, dns_queries=[], logs={},
                      message_ids={"m1": bounce.dsn.returned_message_id, "m2": "<m2@x>"})
    checks = {c.detail[:40]: c for c in evaluate(plan, obs) if c.kind == "dsn"}
    failed = [c for c in checks.values() if c.status == "fail"]
    assert len(failed) == 2
    text = " | ".join(c.detail for c in failed)
    assert "Status 5.1.1, expected 4.4.1" in text and "Remote-MTA mx10.brainbird.nl, expected relay.skimbee.net" in text
    assert "does not match 'timed out'" in text
    assert "a bounce for m1 is in user@skimbee.net" in text


def test_dsn_expectation_problems(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text((TOPOLOGIES / "relay-bounce.yaml").read_text().replace(
        "expect:\n", "expect:\n  - dsn: {for: m9, mailbox: nobody@skimbee.net, status: 6.1, diagnostic: '(?<=x)'}\n", 1))
    with pytest.raises(TopologyError) as info:
        load_topology(path)
    text = "\n".join(map(str, info.value.problems))
    assert "no step sends a message 'm9'" in text
    assert "nobody@skimbee.net is not a mailbox" in text
    assert "status" in text and "diagnostic" in text
