"""Sendmail adapter: log and queue parsing on real recorded output, the tracker on it, rendered config."""

from __future__ import annotations

import ipaddress
import json

import pytest
from recorded import (
    DATA,
    TOPOLOGIES,
    mx_routing_plan,
    recorded_dir,
    recorded_logs,
    recorded_message_ids,
)

from testbed.adapters import mta_adapter
from testbed.adapters.sendmail import access_key, normalise_address
from testbed.events import Kind, MailEvent, QueueEntry
from testbed.model import load_topology
from testbed.observe import events_from_logs
from testbed.plan import EngineCaps, plan_lab
from testbed.render import host_files
from testbed.track import Tracker

SENDMAIL = mta_adapter("sendmail")
SUITES = ["bookworm", "trixie"]
CASE = "mx-routing-broken"


def events(suite: str, host: str, case: str = CASE) -> list[MailEvent]:
    return SENDMAIL.parse_log(recorded_logs("sendmail", suite, case)[host], host)


def of(evs: list[MailEvent], kind: Kind) -> list[MailEvent]:
    return [e for e in evs if e.kind is kind]


# --- log: what each host logged in the broken mx-routing lab ----------------------


@pytest.mark.parametrize("suite", SUITES)
def test_ipv4_only_relay_tries_ipv6_and_hands_over_to_mx30(suite: str) -> None:
    evs = events(suite, "relay")
    ids = recorded_message_ids("sendmail", suite, CASE)
    assert {e.message_id for e in of(evs, Kind.MESSAGE_ID)} == {ids["m1"], ids["m2"]}
    received = of(evs, Kind.RECEIVED)
    assert {e.sender for e in received} == {"user@skimbee.net"}
    assert all(e.relay_name == "client.skimbee.net" and e.relay_address for e in received)
    # The IPv4-only host has no IPv6 address, yet tries every MX host's AAAA first.
    v6_tries = [e for e in of(evs, Kind.NOTE) if e.relay_address and ":" in e.relay_address]
    assert {e.relay_name for e in v6_tries} >= {"mx10.brainbird.nl", "mx20.brainbird.nl", "mx30.brainbird.nl"}
    assert all(e.reason == "Cannot assign requested address" and e.queue_id for e in v6_tries)
    assert v6_tries[0].relay_address == "2001:db8:1::10"  # compressed, unlike the log
    timeouts = [e for e in of(evs, Kind.NOTE) if "timed out" in (e.reason or "")]
    assert timeouts and timeouts[0].relay_address == "198.18.1.10"
    relayed = of(evs, Kind.RELAYED)
    assert [e.relay_name for e in relayed] == ["mx30.brainbird.nl", "mx30.brainbird.nl"]
    assert all(e.relay_address == "198.18.1.30" and e.next_queue_id and e.status == "2.0.0" for e in relayed)
    assert len(of(evs, Kind.REMOVED)) == 2


@pytest.mark.parametrize("suite", SUITES)
def test_ipv6_only_backup_mx_defers_bounces_and_defers_the_bounce(suite: str) -> None:
    evs = events(suite, "mx20")
    deferred = of(evs, Kind.DEFERRED)
    assert deferred and all(e.status == "4.4.1" for e in deferred)
    assert any("Network is unreachable" in (e.reason or "") for e in deferred)
    bounced = of(evs, Kind.BOUNCED)
    assert [(e.recipient, e.status) for e in bounced] == [("unknown_user@brainbird.nl", "5.1.1")]
    assert bounced[0].reason == "550 5.1.1 <unknown_user@brainbird.nl>... User unknown"
    assert bounced[0].relay_address and ipaddress.ip_address(bounced[0].relay_address).version == 6
    (dsn,) = of(evs, Kind.DSN)
    assert dsn.queue_id == bounced[0].queue_id and dsn.dsn_queue_id and dsn.reason == "DSN: User unknown"
    bounce = [e for e in evs if e.queue_id == dsn.dsn_queue_id]
    assert {e.kind for e in bounce} >= {Kind.SENDER, Kind.MESSAGE_ID, Kind.DEFERRED}
    mid = next(e.message_id for e in bounce if e.kind is Kind.MESSAGE_ID)
    assert mid and mid.endswith(f".{dsn.dsn_queue_id}@mx20.brainbird.nl>")
    assert next(e.sender for e in bounce if e.kind is Kind.SENDER) == ""


@pytest.mark.parametrize("suite", SUITES)
def test_final_mx_rejects_at_rcpt_and_delivers_over_lmtp(suite: str) -> None:
    evs = events(suite, "mx10")
    (rejected,) = of(evs, Kind.REJECTED)
    assert rejected.recipient == "unknown_user@brainbird.nl" and rejected.status == "5.1.1"
    assert rejected.relay_name == "mx20.brainbird.nl" and rejected.relay_address == "2001:db8:2::20"
    assert rejected.reason == "550 5.1.1 <unknown_user@brainbird.nl>... User unknown"
    # Sendmail gives the refused transaction a queue id and logs its sender with nrcpts=0.
    assert [e.queue_id for e in of(evs, Kind.SENDER)] == [rejected.queue_id]
    (delivered,) = of(evs, Kind.DELIVERED)
    assert delivered.recipient == "user@brainbird.nl" and delivered.relay_name == "imap.brainbird.nl"


def test_bounce_message_id_is_the_one_the_receiver_logs() -> None:
    """In the fixed lab mx20's bounce reaches mail.skimbee.net, which logs its Message-ID."""
    logs = recorded_logs("sendmail", "bookworm", "mx-routing-fixed")
    mx20, mail = SENDMAIL.parse_log(logs["mx20"], "mx20"), SENDMAIL.parse_log(logs["mail"], "mail")
    (dsn,) = of(mx20, Kind.DSN)
    made = next(e.message_id for e in of(mx20, Kind.MESSAGE_ID) if e.queue_id == dsn.dsn_queue_id)
    relayed = next(e for e in of(mx20, Kind.RELAYED) if e.queue_id == dsn.dsn_queue_id)
    arrived = next(e.message_id for e in of(mail, Kind.MESSAGE_ID) if e.queue_id == relayed.next_queue_id)
    assert made == arrived


def test_failed_bounce_goes_to_the_local_postmaster() -> None:
    """After bounce_lifetime the undeliverable bounce is returned to the postmaster (a file here).

    The relay-bounce relay, kept running past bounce_lifetime (two more messages
    to a stopped mx10 expired there too).
    """
    evs = events("bookworm", "relay", "relay-bounce-broken")
    ids = recorded_message_ids("sendmail", "bookworm", "relay-bounce-broken")
    m1 = next(e.queue_id for e in of(evs, Kind.MESSAGE_ID) if e.message_id == ids["m1"])
    (bounce,) = [d for d in of(evs, Kind.DSN) if d.queue_id == m1]
    assert bounce.reason == "DSN: User unknown"
    (notice,) = [d for d in of(evs, Kind.DSN) if d.queue_id == bounce.dsn_queue_id]
    assert notice.reason == "return to sender: Cannot send message for 3 minutes"
    assert bounce.dsn_queue_id in {e.queue_id for e in of(evs, Kind.EXPIRED)}
    deferred = [e for e in of(evs, Kind.DEFERRED) if e.queue_id == bounce.dsn_queue_id]
    assert deferred and all(e.status == "4.4.3" and e.relay_name == "mail.skimbee.net" for e in deferred)
    delivered = [e for e in of(evs, Kind.DELIVERED) if e.queue_id == notice.dsn_queue_id]
    assert [e.recipient for e in delivered] == ["/var/mail/root"]


def test_refused_restarted_and_discarded() -> None:
    """A dual relay (relay-bounce fixed, kept): mx10's MTA stopped then started, and a DISCARD sender."""
    evs = events("bookworm", "relay", "relay-extra")
    refused = [e for e in of(evs, Kind.NOTE) if (e.reason or "").startswith("Connection refused")]
    assert {e.relay_address for e in refused} == {"2001:db8:1::10", "198.18.1.10"}
    (deferred,) = of(evs, Kind.DEFERRED)
    later = [e for e in of(evs, Kind.RELAYED) if e.queue_id == deferred.queue_id]
    assert [e.relay_address for e in later] == ["2001:db8:1::10"]  # after the flush: sent over IPv6
    (discarded,) = of(evs, Kind.DISCARDED)
    assert discarded.recipient == "user@brainbird.nl" and discarded.reason == "discarded"
    assert "2001:db8:1::100" in {e.relay_address for e in of(evs, Kind.RECEIVED)}  # the client over IPv6


def test_unparseable_lines_are_ignored() -> None:
    text = "garbage\n\n2026-11-29T08:00:00+00:00 h sendmail[1]: 6AT80jHa000073: to=\nNov 29 x sendmail[2]: y\n"
    assert SENDMAIL.parse_log(text, "h") == []


# --- the tracker on the recorded logs ------------------------------------------------


def tracker(suite: str) -> tuple[Tracker, dict[str, str]]:
    plan = mx_routing_plan(software="sendmail")
    logs = recorded_logs("sendmail", suite, CASE)
    queues = json.loads((recorded_dir("sendmail", suite, CASE) / "queues.json").read_text())
    entries = {h: [QueueEntry(**{**e, "recipients": tuple(e["recipients"])}) for e in q] for h, q in queues.items()}
    return Tracker(plan, events_from_logs(plan, logs), entries), recorded_message_ids("sendmail", suite, CASE)


@pytest.mark.parametrize("suite", SUITES)
def test_recorded_addresses_match_the_plan(suite: str) -> None:
    recorded = json.loads((recorded_dir("sendmail", suite, CASE) / "plan.json").read_text())
    plan = mx_routing_plan(software="sendmail")
    for name, seg in plan.segments.items():
        for key in ("subnet_v4", "subnet_v6"):
            planned = getattr(seg, key)
            assert (str(planned) if planned else None) == recorded["segments"][name][key]


@pytest.mark.parametrize("suite", SUITES)
def test_m1_bounce_stays_queued_at_the_ipv6_only_backup(suite: str) -> None:
    track, ids = tracker(suite)
    m1 = track.history("m1", ids["m1"], ("unknown_user@brainbird.nl",))
    assert m1.path == ["relay", "mx30", "mx20"]
    assert [h.family for h in m1.hops[:2]] == ["ipv4", "ipv6"]
    assert m1.hops[-1].outcome == "bounced" and not m1.delivered
    assert m1.dsn_generated_at == ["mx20"]
    (bounce,) = m1.dsns
    assert bounce.recipients == ("user@skimbee.net",)
    assert bounce.path == ["mx20"] and bounce.hops[0].outcome == "deferred" and bounce.hops[0].in_queue
    assert m1.state == "bounce-queued"
    evidence = "\n".join(m1.hops[-1].evidence)
    assert "550 5.1.1" in evidence and "mx10:" in evidence  # the peer's own rejection line
    assert "Network is unreachable" in "\n".join(bounce.hops[0].evidence)


@pytest.mark.parametrize("suite", SUITES)
def test_m2_is_delivered_after_the_detour(suite: str) -> None:
    track, ids = tracker(suite)
    m2 = track.history("m2", ids["m2"], ("user@brainbird.nl",))
    assert m2.path == ["relay", "mx30", "mx20", "mx10"]
    assert [h.family for h in m2.hops[:3]] == ["ipv4", "ipv6", "ipv6"]
    assert m2.delivered_to == [("user@brainbird.nl", "mx10")]
    assert m2.state == "delivered" and m2.dsns == []


def test_after_bounce_lifetime_nobody_but_the_local_postmaster_knows() -> None:
    """The relay-bounce relay past bounce_lifetime: m1 is lost; its bounce went to /var/mail/root."""
    topo = load_topology(TOPOLOGIES / "relay-bounce.yaml", "broken", {"hosts.relay.software": "sendmail"})
    plan = plan_lab(topo, "recorded", EngineCaps((1, 41)))
    logs = recorded_logs("sendmail", "bookworm", "relay-bounce-broken")
    ids = recorded_message_ids("sendmail", "bookworm", "relay-bounce-broken")
    track = Tracker(plan, SENDMAIL.parse_log(logs["relay"], "relay"), {})
    m1 = track.history("m1", ids["m1"], ("unknown_user@brainbird.nl",))
    assert m1.path == ["relay"] and m1.dsn_generated_at == ["relay"]
    (bounce,) = m1.dsns
    assert bounce.hops[0].outcome == "expired" and bounce.dsn_generated_at == ["relay"]
    (notice,) = bounce.dsns
    assert notice.delivered_to == [("/var/mail/root", "relay")] and not notice.delivered
    assert m1.state == "lost"


# --- queue ---------------------------------------------------------------------------


def test_parse_queue_recorded() -> None:
    """tb-queue on a relay during a queue run: one message being delivered (locked), two waiting."""
    text = (DATA / "sendmail" / "bookworm" / "tb-queue.txt").read_text()
    entries = SENDMAIL.parse_queue(text)
    assert sorted((e.state, e.in_flight) for e in entries) == [
        ("active", True), ("deferred", False), ("deferred", False)
    ]
    bounce = next(e for e in entries if e.sender == "")
    assert bounce.state == "deferred" and bounce.recipients == ("user@skimbee.net",)
    assert bounce.reason and bounce.reason.startswith("Deferred: ")


@pytest.mark.parametrize(
    "locked,tries,reason,state",
    [(True, 3, "Deferred: x", "active"), (False, 0, None, "active"), (False, 2, "Deferred: x", "deferred"),
     (False, None, "Deferred: x", "deferred"), (False, None, None, "active")],
)
def test_queue_states(locked: bool, tries: int | None, reason: str | None, state: str) -> None:
    lines = [f"@@qf 6AT812wY000068 {'locked' if locked else 'idle'}"]
    lines += [f"N{tries}"] if tries is not None else []
    lines += [f"M{reason}"] if reason else []
    lines += ["Suser@skimbee.net", "RPF:<a@b.c>"]
    (entry,) = SENDMAIL.parse_queue("\n".join(lines) + "\n")
    assert entry.state == state and entry.recipients == ("a@b.c",) and entry.sender == "user@skimbee.net"


def test_empty_queue() -> None:
    assert SENDMAIL.parse_queue("") == []


# --- configuration -----------------------------------------------------------------------


def files(host: str, variant: str = "broken") -> dict[str, str]:
    plan = mx_routing_plan(variant, software="sendmail")
    return {f.path: f.content for f in host_files(plan, plan.hosts[host])}


@pytest.mark.parametrize(
    "host,listen,client",
    [
        ("relay", ["Family=inet, Name=MTA-v4-1, Port=smtp, Addr=198.18.3.25"], "Family=inet, Addr=198.18.3.25"),
        ("mx20", ["Family=inet6, Name=MTA-v6-1, Port=smtp, Addr=2001:db8:2::20"], "Family=inet6, Addr=2001:db8:2::20"),
        ("mx10", ["Family=inet, Name=MTA-v4-1, Port=smtp, Addr=198.18.1.10",
                  "Family=inet6, Name=MTA-v6-1, Port=smtp, Addr=2001:db8:1::10"], None),
    ],
)
def test_mc_follows_the_stack(host: str, listen: list[str], client: str | None) -> None:
    rendered = files(host)
    mc = rendered["/etc/mail/sendmail.mc"]
    daemons = [line for line in mc.splitlines() if line.startswith("DAEMON_OPTIONS")]
    assert daemons == [f"DAEMON_OPTIONS(`{d}')dnl" for d in listen] + [
        "DAEMON_OPTIONS(`Family=inet, Name=MTA-lo, Port=smtp, Addr=127.0.0.1')dnl"
    ]
    clients = [line for line in mc.splitlines() if line.startswith("CLIENT_OPTIONS")]
    assert clients == ([f"CLIENT_OPTIONS(`{client}')dnl"] if client else [])
    assert f"define(`confDOMAIN_NAME', `{mx_routing_plan().hosts[host].fqdn}')dnl" in mc
    assert "greet_pause" not in mc
    assert f"-ge {len(listen) + 1} ]" in rendered["/etc/testbed/ready"]


def test_mc_time_compression() -> None:
    mc = files("mx30")["/etc/mail/sendmail.mc"]
    for line in ("confTO_CONNECT', `1s'", "confTO_QUEUERETURN', `180s'", "confTO_QUEUERETURN_DSN', `180s'",
                 "confTO_HOSTSTATUS', `5s'", "confTO_QUEUEWARN', `0'", "confMIN_QUEUE_AGE', `0'"):
        assert line in mc
    assert "sendmail -bd -q10s" in files("mx30")["/etc/testbed/service"]


def test_mc_has_no_load_average_limits() -> None:
    # Sendmail's defaults queue only above a load of 8 per CPU and refuse SMTP above 12:
    # a lab's outcome must not depend on what else its machine runs.
    mc = files("relay")["/etc/mail/sendmail.mc"]
    assert "define(`confQUEUE_LA', `1000')dnl" in mc and "define(`confREFUSE_LA', `1000')dnl" in mc


def test_roles() -> None:
    mx10, mx20, relay = files("mx10"), files("mx20"), files("relay")
    assert "To:user@brainbird.nl\tRELAY\nTo:brainbird.nl\tERROR:5.1.1:550 User unknown\n" in mx10["/etc/mail/access"]
    assert mx10["/etc/mail/mailertable"] == "brainbird.nl\tlmtptcp:[imap.brainbird.nl]\n"
    assert "FEATURE(`blocklist_recipients')" in mx10["/etc/mail/sendmail.mc"]
    assert "Mlmtptcp," in mx10["/etc/mail/sendmail.mc"]
    assert mx20["/etc/mail/relay-domains"] == "brainbird.nl\n"
    assert mx20["/etc/mail/mailertable"] == "" and "To:" not in mx20["/etc/mail/access"]
    assert "blocklist_recipients" not in mx20["/etc/mail/sendmail.mc"]
    connect = [line for line in relay["/etc/mail/access"].splitlines() if line.startswith("Connect:")]
    assert connect == ["Connect:127.0.0.1\tRELAY", "Connect:198.18.1\tRELAY", "Connect:IPv6:2001:db8:1:0\tRELAY",
                       "Connect:IPv6:2001:db8:2:0\tRELAY", "Connect:198.18.3\tRELAY"]
    assert "Connect:198" not in mx10["/etc/mail/access"]
    assert relay["/etc/mailname"] == "relay.skimbee.net\n"
    assert "postmaster: root\n" in relay["/etc/aliases"]


@pytest.mark.parametrize(
    "net,key",
    [("198.18.1.0/24", "198.18.1"), ("10.0.0.0/8", "10"), ("2001:db8:1::/64", "IPv6:2001:db8:1:0"),
     ("2001:db8::/32", "IPv6:2001:db8"), ("198.18.1.128/25", "198.18.1")],
)
def test_access_key(net: str, key: str) -> None:
    assert access_key(ipaddress.ip_network(net)) == key


@pytest.mark.parametrize(
    "raw,address",
    [("IPv6:2001:db8:1:0:0:0:0:25", "2001:db8:1::25"), ("198.18.1.25", "198.18.1.25"), ("nonsense", "nonsense")],
)
def test_normalise_address(raw: str, address: str) -> None:
    assert normalise_address(raw) == address
