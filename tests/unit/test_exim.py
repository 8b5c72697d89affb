"""Exim adapter: log and queue parsing on real recorded output (4.96 and 4.98),
the tracker on recorded logs, and the rendered configuration per stack and role."""

from __future__ import annotations

import json
import re

import pytest
from recorded import (
    TOPOLOGIES,
    mx_routing_plan,
    recorded_dir,
    recorded_logs,
    recorded_message_ids,
)

from testbed.adapters import mta_adapter
from testbed.events import Kind, MailEvent, QueueEntry
from testbed.model import load_topology
from testbed.observe import events_from_logs
from testbed.plan import EngineCaps, LabPlan, plan_lab
from testbed.render import host_files
from testbed.track import History, Tracker

EXIM = mta_adapter("exim")
SUITES = ["bookworm", "trixie"]
#: Exim 4.96 message ids have 16 characters, 4.97 and later 23.
ID_LENGTH = {"bookworm": 16, "trixie": 23}


def relay_bounce_plan(variant: str = "broken") -> LabPlan:
    overrides = {f"hosts.{h}.software": "exim" for h in ("relay", "mail", "mx10")}
    return plan_lab(load_topology(TOPOLOGIES / "relay-bounce.yaml", variant, overrides), "recorded", EngineCaps((1, 41)))


PLANS = {"mx-routing": lambda: mx_routing_plan(software="exim"), "relay-bounce": relay_bounce_plan}


def events(suite: str, case: str, host: str) -> list[MailEvent]:
    return EXIM.parse_log(recorded_logs("exim", suite, f"{case}-broken")[host], host)


def of_kind(evs: list[MailEvent], kind: Kind) -> list[MailEvent]:
    return [e for e in evs if e.kind is kind]


def recorded_queue(suite: str, case: str, name: str) -> list[QueueEntry]:
    return EXIM.parse_queue((recorded_dir("exim", suite, f"{case}-broken") / f"queue-{name}.txt").read_text())


# --- the recordings match the plans the tests build -----------------------------------


@pytest.mark.parametrize(
    "suite,recording",
    [(s, f"{c}-broken") for s in SUITES for c in PLANS] + [("trixie", "mx-routing-broken-after-lifetime")],
)
def test_recorded_runs_used_the_planned_addresses(suite: str, recording: str) -> None:
    recorded = json.loads((recorded_dir("exim", suite, recording) / "plan.json").read_text())
    plan = PLANS[recording.split("-broken")[0]]()
    for name, seg in plan.segments.items():
        planned = [str(net) if net else None for net in (seg.subnet_v4, seg.subnet_v6)]
        assert [recorded["segments"][name][k] for k in ("subnet_v4", "subnet_v6")] == planned


# --- log ----------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_backup_mx_log(suite: str) -> None:
    evs = events(suite, "mx-routing", "mx20")
    received = of_kind(evs, Kind.RECEIVED)
    assert [e.relay_name for e in received[:2]] == ["mx30.brainbird.nl"] * 2
    assert all(e.relay_address == "2001:db8:1::30" for e in received[:2])
    assert all(len(e.queue_id or "") == ID_LENGTH[suite] for e in evs)
    ids = recorded_message_ids("exim", suite, "mx-routing-broken")
    assert {e.message_id for e in of_kind(evs, Kind.MESSAGE_ID)} >= set(ids.values())
    # mx10 is down: its AAAA times out, its A cannot even be tried from an IPv6-only host.
    notes = {(e.relay_address, e.reason) for e in of_kind(evs, Kind.NOTE)}
    assert ("2001:db8:1::10", "Connection timed out") in notes
    assert ("198.18.1.10", "Network is unreachable") in notes
    deferred = of_kind(evs, Kind.DEFERRED)
    assert {e.reason for e in deferred} >= {"Network is unreachable"}
    bounced = of_kind(evs, Kind.BOUNCED)
    assert len(bounced) == 1 and bounced[0].recipient == "unknown_user@brainbird.nl"
    assert bounced[0].relay_name == "mx10.brainbird.nl" and bounced[0].relay_address == "2001:db8:1::10"
    assert bounced[0].reason.endswith("RCPT TO:<unknown_user@brainbird.nl>: 550 Unrouteable address")
    (dsn,) = of_kind(evs, Kind.DSN)
    assert dsn.queue_id == bounced[0].queue_id and dsn.dsn_queue_id != dsn.queue_id
    bounce_ids = [e for e in of_kind(evs, Kind.MESSAGE_ID) if e.queue_id == dsn.dsn_queue_id]
    assert [e.message_id for e in bounce_ids] == [f"<E{dsn.dsn_queue_id}@mx20.brainbird.nl>"]
    bounce_received = next(e for e in received if e.queue_id == dsn.dsn_queue_id)
    assert bounce_received.sender == "" and bounce_received.reason == "local submission"
    (relayed,) = of_kind(evs, Kind.RELAYED)
    assert relayed.recipient == "user@brainbird.nl" and relayed.relay_name == "mx10.brainbird.nl"
    mx10_ids = {e.queue_id for e in events(suite, "mx-routing", "mx10")}
    assert relayed.next_queue_id in mx10_ids  # from "250 OK id=..." in C="..."
    assert relayed.reason.endswith("\n250 OK id=" + relayed.next_queue_id)
    removed = {e.queue_id for e in of_kind(evs, Kind.REMOVED)}
    assert bounced[0].queue_id in removed and dsn.dsn_queue_id not in removed


@pytest.mark.parametrize("suite", SUITES)
def test_final_mx_log(suite: str) -> None:
    evs = events(suite, "mx-routing", "mx10")
    (rejected,) = of_kind(evs, Kind.REJECTED)
    assert rejected.queue_id is None
    assert (rejected.sender, rejected.recipient) == ("user@skimbee.net", "unknown_user@brainbird.nl")
    assert (rejected.relay_name, rejected.relay_address) == ("mx20.brainbird.nl", "2001:db8:2::20")
    assert rejected.reason == "Unrouteable address"
    (delivered,) = of_kind(evs, Kind.DELIVERED)
    assert delivered.recipient == "user@brainbird.nl" and delivered.relay_name == "imap.brainbird.nl"
    assert delivered.next_queue_id is None and delivered.status == "2.0.0"
    assert "Saved" in delivered.reason


@pytest.mark.parametrize("suite", SUITES)
def test_ipv4_only_relay_never_uses_ipv6(suite: str) -> None:
    evs = events(suite, "mx-routing", "relay")
    addresses = {e.relay_address for e in evs if e.relay_address}
    assert addresses and not any(":" in a for a in addresses)
    assert {e.relay_name for e in of_kind(evs, Kind.RELAYED)} == {"mx30.brainbird.nl"}


@pytest.mark.parametrize("suite", SUITES)
def test_failed_bounce_is_frozen(suite: str) -> None:
    evs = events(suite, "relay-bounce", "relay")
    (dsn,) = of_kind(evs, Kind.DSN)
    failed = [e for e in of_kind(evs, Kind.BOUNCED) if e.queue_id == dsn.dsn_queue_id]
    assert [e.reason for e in failed] == ["all relevant MX records point to non-existent hosts"]
    assert failed[0].relay_address is None and failed[0].recipient == "user@skimbee.net"
    (frozen,) = of_kind(evs, Kind.FROZEN)
    assert frozen.queue_id == dsn.dsn_queue_id and frozen.reason == "Frozen (delivery error message)"


def test_frozen_bounce_dropped_after_bounce_lifetime() -> None:
    # The relay-bounce relay's log, kept running until ignore_bounce_errors_after (4.96).
    evs = EXIM.parse_log(recorded_logs("exim", "bookworm", "relay-bounce-broken-after-lifetime")["relay"], "relay")
    (dsn,) = of_kind(evs, Kind.DSN)
    bounce = [e for e in evs if e.queue_id == dsn.dsn_queue_id]
    assert [e.kind for e in bounce] == [
        Kind.RECEIVED, Kind.MESSAGE_ID, Kind.BOUNCED, Kind.FROZEN, Kind.NOTE, Kind.BOUNCED, Kind.DISCARDED, Kind.REMOVED,
    ]
    assert bounce[4].reason == "Unfrozen by errmsg timer"
    assert bounce[6].recipient == "user@skimbee.net" and bounce[6].reason == "user@skimbee.net: error ignored"


def test_reused_connection_mark() -> None:
    # "[addr]*": the delivery went down a connection already open (4.98, mx20).
    (bounced,) = of_kind(events("trixie", "mx-routing", "mx20"), Kind.BOUNCED)
    assert "]* I=[" in bounced.line
    assert bounced.relay_address == "2001:db8:1::10"
    assert bounced.reason.startswith("SMTP error from remote mail server after RCPT TO:")


def test_unparseable_lines_are_ignored() -> None:
    text = "garbage\n\n2026-11-29 07:51:43.421 exim 4.96 daemon started: pid=23, -q5s\n2026-11-29 07:51:43 x\n"
    assert EXIM.parse_log(text, "x") == []


# --- queue --------------------------------------------------------------------------------


@pytest.mark.parametrize("suite", SUITES)
def test_queue_states(suite: str) -> None:
    (deferred,) = recorded_queue(suite, "mx-routing", "mx20-deferred")
    assert deferred.state == "deferred" and not deferred.in_flight
    assert deferred.sender == "" and deferred.recipients == ("user@skimbee.net",)
    assert deferred.reason.endswith("defer (101): Network is unreachable")
    assert len(deferred.queue_id) == ID_LENGTH[suite]

    bounce, new = recorded_queue(suite, "mx-routing", "mx20-active")
    assert bounce.queue_id == deferred.queue_id and bounce.state == "deferred"
    # Being delivered right now (a delivery process holds it), never tried before.
    assert new.state == "active" and new.in_flight and new.reason is None
    assert (new.sender, new.recipients) == ("user@brainbird.nl", ("user@brainbird.nl",))

    (frozen,) = recorded_queue(suite, "relay-bounce", "relay-frozen")
    assert frozen.state == "frozen" and not frozen.in_flight
    assert frozen.reason == "*** Frozen (delivery error message)"


def test_queue_entry_without_state_line_counts_as_in_flight() -> None:
    # The helper lists `exim -bp` first; a message that arrives in between has no state line yet.
    text = (recorded_dir("exim", "bookworm", "mx-routing-broken") / "queue-mx20-deferred.txt").read_text()
    listing = "\n".join(line for line in text.splitlines() if not line.startswith("testbed-queue "))
    (entry,) = EXIM.parse_queue(listing)
    assert entry.state == "active" and entry.in_flight


def test_empty_queue() -> None:
    assert EXIM.parse_queue("") == []


# --- following messages -------------------------------------------------------------------


def tracker(suite: str, case: str, recording: str = "broken") -> tuple[Tracker, dict[str, str]]:
    plan = PLANS[case]()
    d = f"{case}-{recording}"
    queues = json.loads((recorded_dir("exim", suite, d) / "queues.json").read_text())
    entries = {
        host: [QueueEntry(e["queue_id"], e["state"], e.get("sender", ""), tuple(e["recipients"]), e.get("reason"))
               for e in q]
        for host, q in queues.items() if q
    }
    return Tracker(plan, events_from_logs(plan, recorded_logs("exim", suite, d)), entries), recorded_message_ids("exim", suite, d)


def history(track: Tracker, ids: dict[str, str], name: str, to: str) -> History:
    return track.history(name, ids[name], (to,))


@pytest.mark.parametrize("suite", SUITES)
def test_bounce_stuck_at_the_ipv6_only_backup(suite: str) -> None:
    track, ids = tracker(suite, "mx-routing")
    m1 = history(track, ids, "m1", "unknown_user@brainbird.nl")
    assert m1.path == ["relay", "mx30", "mx20"]
    assert [h.family for h in m1.hops[:2]] == ["ipv4", "ipv6"]
    assert m1.hops[-1].outcome == "bounced" and not m1.delivered
    assert m1.dsn_generated_at == ["mx20"]
    (bounce,) = m1.dsns
    assert bounce.path == ["mx20"] and bounce.hops[0].outcome == "deferred" and bounce.hops[0].in_queue
    assert bounce.hops[0].reason == "Network is unreachable"
    # Exim keeps retrying the bounce (A record, ENETUNREACH) until its retry cutoff.
    assert m1.state == "bounce-queued"
    evidence = "\n".join(m1.hops[-1].evidence)
    assert "mx10: " in evidence and "rejected RCPT <unknown_user@brainbird.nl>" in evidence


def test_bounce_discarded_once_its_retries_run_out() -> None:
    # The same lab (4.98) kept running past queue_lifetime: mx20 gives up on the
    # bounce ("retry timeout exceeded") and drops it ("error ignored").
    track, ids = tracker("trixie", "mx-routing", "broken-after-lifetime")
    m1 = history(track, ids, "m1", "unknown_user@brainbird.nl")
    assert m1.path == ["relay", "mx30", "mx20"] and m1.dsn_generated_at == ["mx20"]
    (bounce,) = m1.dsns
    assert bounce.hops[0].outcome == "discarded" and not bounce.hops[0].in_queue
    evidence = "\n".join(bounce.hops[0].evidence)
    assert "** user@skimbee.net: retry timeout exceeded" in evidence and "error ignored" in evidence
    assert m1.state == "lost"
    assert history(track, ids, "m2", "user@brainbird.nl").state == "delivered"


@pytest.mark.parametrize("suite", SUITES)
def test_control_message_takes_the_detour(suite: str) -> None:
    track, ids = tracker(suite, "mx-routing")
    m2 = history(track, ids, "m2", "user@brainbird.nl")
    assert m2.path == ["relay", "mx30", "mx20", "mx10"]
    assert [h.family for h in m2.hops[:3]] == ["ipv4", "ipv6", "ipv6"]
    assert m2.delivered_to == [("user@brainbird.nl", "mx10")]
    assert m2.state == "delivered" and m2.dsns == []


@pytest.mark.parametrize("suite", SUITES)
def test_bounce_frozen_at_the_ipv4_only_relay(suite: str) -> None:
    track, ids = tracker(suite, "relay-bounce")
    m1 = history(track, ids, "m1", "unknown_user@brainbird.nl")
    assert m1.path == ["relay"] and m1.hops[0].outcome == "bounced"
    assert m1.dsn_generated_at == ["relay"]
    (bounce,) = m1.dsns
    assert bounce.hops[0].outcome == "frozen" and bounce.hops[0].in_queue
    assert m1.state == "bounce-queued"
    m2 = history(track, ids, "m2", "user@brainbird.nl")
    assert m2.path == ["relay", "mx10"] and m2.state == "delivered"
    assert [h.family for h in m2.hops[:1]] == ["ipv4"]


# --- rendered configuration ---------------------------------------------------------------


def exim_files(plan: LabPlan, host: str) -> dict[str, str]:
    return {f.path: f.content for f in host_files(plan, plan.hosts[host])}


def option(conf: str, name: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(name)} = ?(.*)$", conf, re.MULTILINE)
    return m[1] if m else None


@pytest.mark.parametrize(
    "host,listen",
    [("relay", "<; 0.0.0.0"), ("mx20", "<; ::0"), ("mx10", "<; ::0 ; 0.0.0.0")],
)
def test_config_follows_the_stack(host: str, listen: str) -> None:
    conf = exim_files(mx_routing_plan(software="exim"), host)["/etc/exim4/exim4.conf"]
    assert option(conf, "local_interfaces") == listen
    # Only the IPv4-only host turns IPv6 off; the IPv6-only one stays a plain Exim.
    assert (option(conf, "disable_ipv6") == "true") == (host == "relay")
    assert option(conf, "dns_ipv4_lookup") is None
    assert option(conf, "ignore_target_hosts") == "0.0.0.0 : 127.0.0.0/8"


def test_config_time_compression() -> None:
    plan = mx_routing_plan(software="exim")
    files = exim_files(plan, "mx20")
    conf = files["/etc/exim4/exim4.conf"]
    assert option(conf, "retry_interval_max") == "30s"
    assert option(conf, "ignore_bounce_errors_after") == "180s"
    assert option(conf, "delay_warning") == "0s"
    assert re.search(r"^\*  \*  G,180s,10s,2$", conf, re.MULTILINE)
    assert conf.count("connect_timeout = 1s") == 1  # remote_smtp only: mx20 stores no mail
    assert option(conf, "hosts_try_fastopen") == ""
    assert "-smtp_confirmation" not in conf and "+smtp_confirmation" in conf
    assert "exec exim4 -bd -q5s" in files["/etc/testbed/service"]


def test_config_roles() -> None:
    plan = mx_routing_plan(software="exim")
    mx10, mx20, relay = (exim_files(plan, h)["/etc/exim4/exim4.conf"] for h in ("mx10", "mx20", "relay"))
    assert option(mx10, "domainlist local_domains") == "brainbird.nl"
    assert option(mx10, "domainlist relay_to_domains") == ""
    router = mx10[mx10.index("mailbox_1:"):mx10.index("dnslookup:")]
    assert "local_parts = user\n" in router and "route_data = imap.brainbird.nl\n" in router
    transport = mx10[mx10.index("lmtp_delivery:\n"):]
    assert "protocol = lmtp" in transport and "port = 24" in transport
    assert option(mx20, "domainlist relay_to_domains") == "brainbird.nl"
    assert option(mx20, "domainlist local_domains") == "" and "mailbox_1:" not in mx20
    assert option(relay, "hostlist relay_from_hosts") == (
        "<; 127.0.0.1 ; 198.18.1.0/24 ; 2001:db8:1::/64 ; 2001:db8:2::/64 ; 198.18.3.0/24"
    )
    assert option(mx10, "hostlist relay_from_hosts") == "<; 127.0.0.1 ; ::1"
    # The unknown-user check comes before any accept, so it holds for every client.
    acl = mx10[mx10.index("acl_check_rcpt:"):mx10.index("begin routers")]
    assert acl.index("!verify = recipient") < acl.index("accept  hosts = +relay_from_hosts")
    files = exim_files(plan, "mx10")
    assert files["/etc/mailname"] == "mx10.brainbird.nl\n"
    assert files["/etc/testbed/service"].startswith("#!/bin/sh")
    assert "ss -Hltn 'sport = :25'" in files["/etc/testbed/ready"]
