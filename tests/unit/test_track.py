"""Following messages and their bounces across hosts, on real recorded logs."""

from __future__ import annotations

import json

import pytest
from recorded import mx_routing_plan, recorded_dir, recorded_logs, recorded_message_ids

from testbed.events import QueueEntry
from testbed.observe import events_from_logs
from testbed.track import Tracker


def tracker(suite: str) -> tuple[Tracker, dict[str, str]]:
    plan = mx_routing_plan()
    logs = recorded_logs("postfix", suite, "mx-routing-broken")
    queues = json.loads((recorded_dir("postfix", suite, "mx-routing-broken") / "queues.json").read_text())
    entries = {h: [QueueEntry(**{**e, "recipients": tuple(e["recipients"])}) for e in q] for h, q in queues.items() if q}
    return Tracker(plan, events_from_logs(plan, logs), entries), recorded_message_ids("postfix", suite, "mx-routing-broken")


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_lost_bounce_path(suite: str) -> None:
    track, ids = tracker(suite)
    m1 = track.history("m1", ids["m1"], ("unknown_user@brainbird.nl",))
    assert m1.path == ["relay", "mx30", "mx20"]
    assert [h.family for h in m1.hops[:2]] == ["ipv4", "ipv6"]
    assert m1.hops[-1].outcome == "bounced"
    assert not m1.delivered
    assert m1.dsn_generated_at == ["mx20"]
    assert len(m1.dsns) == 1 and not m1.dsns[0].delivered
    assert m1.dsns[0].path == ["mx20"] and m1.dsns[0].hops[0].outcome == "bounced"
    assert m1.state == "lost"
    evidence = "\n".join(m1.hops[-1].evidence)
    assert "550 5.1.1" in evidence and "mx10:" in evidence  # the peer's own rejection line


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_control_message_is_delivered_after_the_detour(suite: str) -> None:
    track, ids = tracker(suite)
    m2 = track.history("m2", ids["m2"], ("user@brainbird.nl",))
    assert m2.path == ["relay", "mx30", "mx20", "mx10"]
    assert m2.delivered_to == [("user@brainbird.nl", "mx10")]
    assert m2.state == "delivered"
    assert m2.dsns == []


def test_unknown_message() -> None:
    track, _ = tracker("bookworm")
    hist = track.history("m9", "<nope@x>", ("a@b.c",))
    assert hist.hops == [] and hist.state == "lost"


def test_message_still_queued_is_queued() -> None:
    track, ids = tracker("bookworm")
    node = next(n for n in track.nodes_of[ids["m1"]] if n[0] == "mx20")
    track.queued.add(node)
    assert track.history("m1", ids["m1"], ("unknown_user@brainbird.nl",)).state == "queued"
