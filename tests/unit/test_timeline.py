"""The run's timeline: every source in one time order, with Postfix's year-less times read in the run's year."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.adapters import mta_adapter
from testbed.timeline import build, jsonl, log_time
from testbed.track import History, Hop

DATA = Path(__file__).resolve().parents[1] / "data"


def test_log_times_of_each_mta() -> None:
    assert log_time("Dec 02 06:03:17", 2026) == log_time("2026-12-02T06:03:17+00:00", 2026)
    assert log_time("Dec  2 06:03:17", 2026) == log_time("2026-12-02 06:03:17.000", 2026)
    assert abs(log_time("2026-12-02T06:14:40.923268+00:00", 2026) % 1 - 0.923268) < 1e-6
    assert log_time("not a time", 2026) is None


def test_sources_interleave_in_time_order_and_events_know_their_message() -> None:
    postfix = mta_adapter("postfix")
    log = (DATA / "clients" / "repeat" / "bookworm-postfix-mx-b.log").read_text()
    connections = postfix.parse_connections(log, "mx-b")
    line = ("Dec 02 06:03:20 mx-b postfix/smtpd[70]: 4F2A1B: client=relay.example.org[2001:db8:e::30]:40000")
    events = postfix.parse_log(line, "mx-b")
    hist = History("m1", "<m1@x>", ("user@example.net",), hops=[Hop("mx-b", "4F2A1B", "delivered")])
    steps = [{"index": 0, "summary": "client office-glibc", "started_at": log_time("Dec 02 06:03:15", 2026)}]
    dns = [{"wall": "2026-12-02T06:03:16.500Z", "client": "2001:db8:e::10", "name": "smtp.example.net.",
            "type": "AAAA", "rcode": "NOERROR", "answers": ["smtp.example.net. 60 AAAA 2001:db8:f::26"],
            "rule": "round-robin"}]
    entries = build(steps, dns, [], connections, events, {"m1": hist}, "dns", 2026)
    assert [e.source for e in entries[:2]] == ["step", "dns"]
    assert all(a.t <= b.t for a, b in zip(entries, entries[1:]))
    assert {e.source for e in entries} == {"step", "dns", "server", "mta"}
    [mta] = [e for e in entries if e.source == "mta"]
    assert mta.message == "m1" and mta.host == "mx-b"
    assert "rule round-robin" in entries[1].text
    lines = [json.loads(x) for x in jsonl(entries).splitlines()]
    assert lines[0]["time"] == "06:03:15.000" and lines[0]["source"] == "step"


def test_whole_second_sources_say_so() -> None:
    from testbed.timeline import _resolution

    assert _resolution("Dec 02 06:03:17") == 1
    assert _resolution("2026-12-02 06:12:00.798") is None
    assert _resolution("2026-12-02T06:14:40.923268+00:00") is None
