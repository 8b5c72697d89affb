"""The two reproductions with Exim on every MTA host, checked in the live containers.

Exim ends the broken variants differently from Postfix: the undeliverable
bounce stays queued (frozen at the IPv4-only relay, deferred at the IPv6-only
mx20) until its lifetime ends. The topologies expect that per MTA; the facts
behind it are checked here again, directly in the containers.
"""

from __future__ import annotations

import pytest
from conftest import STUDY_VARIANTS, labs_with
from helpers import dns_queries, explain, mailbox

exim_labs = labs_with("exim")  # module scope: removed before the next module starts its labs


@pytest.mark.parametrize("key", STUDY_VARIANTS)
def test_verdict_holds_with_exim_everywhere(exim_labs, key) -> None:
    result = exim_labs[key].result
    assert result.passed, explain(result)


def test_ipv4_only_relay_has_no_ipv6(exim_labs) -> None:
    lab = exim_labs[("relay-bounce", "broken")]
    relay = lab.host("relay")
    assert relay.check_output("exim4 -bP disable_ipv6") == "disable_ipv6"  # i.e. true
    assert relay.socket("tcp://0.0.0.0:25").is_listening
    types = {q["type"] for q in dns_queries(lab, "relay")}
    assert {"MX", "A"} <= types and "AAAA" not in types


def test_relay_bounce_broken_bounce_frozen_at_the_relay(exim_labs) -> None:
    lab = exim_labs[("relay-bounce", "broken")]
    log = lab.mail_log("relay")
    assert "SMTP error from remote mail server after RCPT TO:<unknown_user@brainbird.nl>: 550 Unrouteable address" in log
    assert "** user@skimbee.net: all relevant MX records point to non-existent hosts" in log
    assert "Frozen (delivery error message)" in log
    [bounce] = lab.queue("relay")
    assert bounce.state == "frozen" and bounce.sender == "" and bounce.recipients == ("user@skimbee.net",)
    assert mailbox(lab, "user@skimbee.net") == []
    assert "rejected RCPT <unknown_user@brainbird.nl>: Unrouteable address" in lab.mail_log("mx10")
    assert lab.result.histories["m1"].state == "bounce-queued"


def test_mx_routing_broken_hops_and_families(exim_labs) -> None:
    lab = exim_labs[("mx-routing", "broken")]
    relay_log, mx30_log, mx20_log = (lab.mail_log(h) for h in ("relay", "mx30", "mx20"))
    mx10_v4, mx10_v6 = lab.address("mx10", "ipv4"), lab.address("mx10", "ipv6")
    assert f"H=mx10.brainbird.nl [{mx10_v4}] Connection timed out" in relay_log
    assert f"H=mx30.brainbird.nl [{lab.address('mx30', 'ipv4')}]" in relay_log
    assert "mx20" not in relay_log.replace("mx20.brainbird.nl", "")  # never even tried
    assert f"H=mx20.brainbird.nl [{lab.address('mx20', 'ipv6')}]" in mx30_log
    # The IPv6-only Exim still tries mx10's A record; the kernel refuses at once.
    assert f"H=mx10.brainbird.nl [{mx10_v6}] Connection timed out" in mx20_log
    assert f"H=mx10.brainbird.nl [{mx10_v4}] Network is unreachable" in mx20_log
    assert lab.result.histories["m1"].path == ["relay", "mx30", "mx20"]


def test_mx_routing_broken_bounce_retried_at_mx20(exim_labs) -> None:
    lab = exim_labs[("mx-routing", "broken")]
    mx20 = lab.host("mx20")
    listening = mx20.check_output("ss -Hltn 'sport = :25'")
    assert "[::]:25" in listening and "0.0.0.0:25" not in listening
    log = lab.mail_log("mx20")
    assert "RCPT TO:<unknown_user@brainbird.nl>: 550 Unrouteable address" in log
    assert "== user@skimbee.net R=dnslookup T=remote_smtp defer (101): Network is unreachable" in log
    [bounce] = lab.queue("mx20")
    assert bounce.state == "deferred" and bounce.sender == ""
    assert mailbox(lab, "user@skimbee.net") == []
    # Unlike the IPv4-only relay, it asks for A records, which it cannot use.
    assert any(q["name"] == "mail.skimbee.net." and q["type"] == "A" and q["answers"] for q in dns_queries(lab, "mx20"))


def test_control_messages_delivered_into_dovecot_over_lmtp(exim_labs) -> None:
    for key in (("mx-routing", "broken"), ("relay-bounce", "broken")):
        lab = exim_labs[key]
        message_id = lab.result.histories["m2"].message_id
        [msg] = mailbox(lab, "user@brainbird.nl")
        assert message_id in msg
        assert 'R=mailbox_1 T=lmtp_delivery H=imap.brainbird.nl' in lab.mail_log("mx10")
        dovecot_log = lab.host("bb-imap").file("/var/log/testbed/dovecot.log").content_string
        assert f"msgid={message_id}: saved mail to INBOX" in dovecot_log


def test_fixed_bounce_is_an_exim_dsn(exim_labs) -> None:
    lab = exim_labs[("mx-routing", "fixed")]
    [dsn] = mailbox(lab, "user@skimbee.net")
    assert lab.result.histories["m1"].message_id in dsn
    assert "Mailer-Daemon@mx20.brainbird.nl" in dsn
    assert "report-type=delivery-status" in dsn
