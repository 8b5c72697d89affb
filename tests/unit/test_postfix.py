"""Postfix adapter: log and queue parsing on real recorded output, rendered config."""

from __future__ import annotations

import pytest
from recorded import mx_routing_plan, recorded_logs

from testbed.adapters import mta_adapter
from testbed.events import Kind
from testbed.render import host_files

POSTFIX = mta_adapter("postfix")


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_backup_mx_log(suite: str) -> None:
    events = POSTFIX.parse_log(recorded_logs("postfix", suite, "mx-routing-broken")["mx20"], "mx20")
    kinds = [e.kind for e in events]
    assert Kind.RECEIVED in kinds and Kind.MESSAGE_ID in kinds
    deferred = [e for e in events if e.kind is Kind.DEFERRED]
    assert deferred and all(e.status == "4.4.1" for e in deferred)
    assert "Connection timed out" in deferred[0].reason
    notes = [e for e in events if e.kind is Kind.NOTE and e.relay_address]
    assert notes and notes[0].relay_address.startswith("2001:db8:") and notes[0].queue_id
    bounced = [e for e in events if e.kind is Kind.BOUNCED]
    assert {e.recipient for e in bounced} == {"unknown_user@brainbird.nl", "user@skimbee.net"}
    assert any(e.status == "5.1.1" and "User unknown" in e.reason for e in bounced)
    assert any(e.status == "5.4.4" and "type=AAAA" in e.reason for e in bounced)
    dsn = [e for e in events if e.kind is Kind.DSN]
    assert len(dsn) == 1 and dsn[0].dsn_queue_id
    warning = [e for e in events if e.kind is Kind.NOTE and "no MX host for skimbee.net" in (e.reason or "")]
    assert warning and warning[0].queue_id == dsn[0].dsn_queue_id  # attached to the bounce's queue id
    relayed = [e for e in events if e.kind is Kind.RELAYED]
    assert relayed and relayed[0].next_queue_id and relayed[0].relay_name == "mx10.brainbird.nl"


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_primary_mx_log(suite: str) -> None:
    events = POSTFIX.parse_log(recorded_logs("postfix", suite, "mx-routing-broken")["mx10"], "mx10")
    rejected = [e for e in events if e.kind is Kind.REJECTED]
    assert len(rejected) == 1
    assert rejected[0].recipient == "unknown_user@brainbird.nl" and rejected[0].status == "5.1.1"
    assert rejected[0].relay_name == "mx20.brainbird.nl"
    delivered = [e for e in events if e.kind is Kind.DELIVERED]
    assert [e.recipient for e in delivered] == ["user@brainbird.nl"]


def test_relay_never_logs_ipv6() -> None:
    events = POSTFIX.parse_log(recorded_logs("postfix", "bookworm", "mx-routing-broken")["relay"], "relay")
    addresses = {e.relay_address for e in events if e.relay_address}
    assert addresses and not any(":" in a for a in addresses)


def test_unparseable_lines_are_ignored() -> None:
    assert POSTFIX.parse_log("garbage\n\n: : :\nNov 29 07:20:10 x postfix/smtp[1]: \n", "x") == []


QUEUE_JSON = (
    '{"queue_name": "deferred", "queue_id": "CA38CF4E42", "arrival_time": 1795935303, "message_size": 243, '
    '"forced_expire": false, "sender": "a@b.c", "recipients": [{"address": "nobody@example.org", '
    '"delay_reason": "Host or domain name not found"}]}\n'
    '{"queue_name": "active", "queue_id": "4A1", "sender": "", "recipients": [{"address": "x@y.z"}]}\n'
    "postqueue: warning: something\n"
)


def test_parse_queue() -> None:
    entries = POSTFIX.parse_queue(QUEUE_JSON)
    assert [(e.queue_id, e.state, e.in_flight) for e in entries] == [("CA38CF4E42", "deferred", False), ("4A1", "active", True)]
    assert entries[0].reason == "Host or domain name not found"
    assert entries[1].sender == ""


@pytest.mark.parametrize(
    "host,protocols", [("relay", "ipv4"), ("mx20", "ipv6"), ("mx10", "all")]
)
def test_main_cf_follows_the_stack(host: str, protocols: str) -> None:
    plan = mx_routing_plan()
    main_cf = next(f for f in host_files(plan, plan.hosts[host]) if f.path == "/etc/postfix/main.cf").content
    assert f"inet_protocols = {protocols}\n" in main_cf
    assert "minimal_backoff_time = 10s" in main_cf and "smtp_connect_timeout = 1s" in main_cf


def test_main_cf_roles() -> None:
    plan = mx_routing_plan()
    files = {h: {f.path: f.content for f in host_files(plan, plan.hosts[h])} for h in ("mx10", "mx20", "relay")}
    assert "virtual_mailbox_domains = brainbird.nl" in files["mx10"]["/etc/postfix/main.cf"]
    assert "user@brainbird.nl brainbird.nl/user/" in files["mx10"]["/etc/postfix/vmailbox"]
    assert "relay_domains = brainbird.nl\n" in files["mx20"]["/etc/postfix/main.cf"]
    assert "virtual_mailbox_domains" not in files["mx20"]["/etc/postfix/main.cf"]
    relay_cf = files["relay"]["/etc/postfix/main.cf"]
    assert "mynetworks = 127.0.0.0/8 198.18.1.0/24 [2001:db8:1::]/64" in relay_cf
    assert files["relay"]["/etc/testbed/service"].startswith("#!/bin/sh")
