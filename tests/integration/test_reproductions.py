"""The study's two MTA-chain failures and their fixes, checked on the live containers.

The run's own verdict must hold, and the same facts are checked again directly
in the containers (mailboxes, queues, logs, the DNS query log), so a bug in the
tracker cannot make a failure look reproduced.
"""

from __future__ import annotations

import pytest
from helpers import dns_queries, explain, mail_log, mailbox


@pytest.mark.parametrize(
    "key",
    [
        ("mx-routing", "broken"),
        ("mx-routing", "fixed"),
        ("relay-bounce", "broken"),
        ("relay-bounce", "fixed"),
        ("dns-servfail", "servfail"),
        ("dns-servfail", "healthy"),
    ],
)
def test_verdict_holds(labs, key) -> None:
    result = labs[key].result
    assert result.passed, explain(result)


# --- relay-bounce (slides 9-14) -----------------------------------------------------


def test_relay_bounce_broken_relay_is_ipv4_only_postfix(rb_broken) -> None:
    relay = rb_broken.host("relay")
    assert relay.check_output("postconf -h inet_protocols") == "ipv4"
    assert relay.socket("tcp://0.0.0.0:25").is_listening
    assert relay.check_output("ip -6 -o addr show") == ""


def test_relay_bounce_broken_bounce_is_lost_at_the_relay(rb_broken) -> None:
    log = mail_log(rb_broken, "relay")
    assert "550 5.1.1 <unknown_user@brainbird.nl>" in log
    assert "sender non-delivery notification" in log
    assert "warning: no MX host for skimbee.net has a valid address record" in log
    assert "dsn=5.4.4, status=bounced" in log
    assert rb_broken.host("relay").check_output("postqueue -j") == ""  # nothing left to retry
    assert mailbox(rb_broken, "user@skimbee.net") == []
    assert "NOQUEUE: reject: RCPT from relay.skimbee.net" in mail_log(rb_broken, "mx10")


def test_relay_bounce_broken_relay_never_asks_aaaa(rb_broken) -> None:
    types = {q["type"] for q in dns_queries(rb_broken, "relay")}
    assert "MX" in types and "A" in types
    assert "AAAA" not in types


def test_relay_bounce_fixed_bounce_reaches_the_sender(rb_fixed) -> None:
    [dsn] = mailbox(rb_fixed, "user@skimbee.net")
    assert "Undelivered Mail Returned to Sender" in dsn
    assert rb_fixed.result.histories["m1"].message_id in dsn
    assert "report-type=delivery-status" in dsn
    relay_to_mail = [q for q in dns_queries(rb_fixed, "relay") if q["name"] == "mail.skimbee.net." and q["type"] == "AAAA"]
    assert relay_to_mail and relay_to_mail[0]["answers"]


def test_control_messages_are_delivered_into_dovecot(rb_broken, mx_broken) -> None:
    for lab in (rb_broken, mx_broken):
        [msg] = mailbox(lab, "user@brainbird.nl")
        assert lab.result.histories["m2"].message_id in msg
        assert "status=sent (250 2.0.0 <user@brainbird.nl>" in mail_log(lab, "mx10")  # LMTP reply
        dovecot_log = lab.host("bb-imap").file("/var/log/testbed/dovecot.log").content_string
        assert f"msgid={lab.result.histories['m2'].message_id}: saved mail to INBOX" in dovecot_log


def test_dovecot_listens_per_stack(mx_broken, rb_broken) -> None:
    assert mx_broken.host("sk-imap").socket("tcp://0.0.0.0:143").is_listening  # IPv4-only store
    assert not mx_broken.host("sk-imap").socket("tcp://:::143").is_listening
    assert rb_broken.host("sk-imap").socket("tcp://:::24").is_listening  # IPv6-only store


# --- mx-routing (slides 15-22) ------------------------------------------------------------


def test_mx_routing_broken_hops_and_families(mx_broken) -> None:
    relay_log, mx30_log, mx20_log = (mail_log(mx_broken, h) for h in ("relay", "mx30", "mx20"))
    mx10_v4, mx10_v6 = mx_broken.address("mx10", "ipv4"), mx_broken.address("mx10", "ipv6")
    assert f"connect to mx10.brainbird.nl[{mx10_v4}]:25: Connection timed out" in relay_log
    assert f"relay=mx30.brainbird.nl[{mx_broken.address('mx30', 'ipv4')}]:25" in relay_log
    assert "mx20" not in relay_log.replace("mx20.brainbird.nl", "")  # never even tried
    assert f"relay=mx20.brainbird.nl[{mx_broken.address('mx20', 'ipv6')}]:25" in mx30_log
    assert f"connect to mx10.brainbird.nl[{mx10_v6}]:25: Connection timed out" in mx20_log
    assert "status=deferred" in mx20_log


def test_mx_routing_broken_bounce_dies_at_mx20(mx_broken) -> None:
    mx20 = mx_broken.host("mx20")
    log = mail_log(mx_broken, "mx20")
    assert mx20.check_output("postconf -h inet_protocols") == "ipv6"
    assert "said: 550 5.1.1 <unknown_user@brainbird.nl>" in log
    assert "warning: no MX host for skimbee.net has a valid address record" in log
    assert "type=AAAA: Host found but no data record of requested type" in log
    assert mx20.check_output("postqueue -j") == ""
    assert mailbox(mx_broken, "user@skimbee.net") == []


def test_mx_routing_broken_dns_families(mx_broken) -> None:
    relay = dns_queries(mx_broken, "relay")
    mx20 = dns_queries(mx_broken, "mx20")
    assert {q["type"] for q in relay} >= {"MX", "A"} and "AAAA" not in {q["type"] for q in relay}
    assert "A" not in {q["type"] for q in mx20}  # an IPv6-only Postfix never asks for A
    assert any(q["name"] == "mail.skimbee.net." and q["type"] == "AAAA" and not q["answers"] for q in mx20)
    assert all(q["family"] == "ipv6" for q in mx20) and all(q["family"] == "ipv4" for q in relay)


def test_mx_routing_fixed_bounce_reaches_the_sender(mx_fixed) -> None:
    [dsn] = mailbox(mx_fixed, "user@skimbee.net")
    assert mx_fixed.result.histories["m1"].message_id in dsn
    assert "MAILER-DAEMON@mx20.brainbird.nl" in dsn
    relay_log = mail_log(mx_fixed, "relay")
    assert f"relay=mx20.brainbird.nl[{mx_fixed.address('mx20', 'ipv4')}]:25" in relay_log


def test_mailbox_reachable_over_pop3_and_imap_on_both_families(mx_broken) -> None:
    """A user's view of the dual-stack store: POP3 and IMAP, over IPv4 and IPv6."""
    client = mx_broken.host("client")
    for family in ("ipv4", "ipv6"):
        server = mx_broken.address("bb-imap", family)
        out = client.check_output(
            "python3 -c \"import poplib,imaplib,sys\n"
            "p=poplib.POP3(sys.argv[1]); p.user('user@brainbird.nl'); p.pass_('testbed'); print(p.stat()[0]); p.quit()\n"
            "i=imaplib.IMAP4(sys.argv[1]); i.login('user@brainbird.nl','testbed'); print(i.select('INBOX')[1][0].decode())\" %s",
            server,
        )
        assert out.split() == ["1", "1"], (family, out)
