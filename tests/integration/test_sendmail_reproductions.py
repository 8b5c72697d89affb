"""The two reproductions with Sendmail on every MTA host, checked in the live containers.

Sendmail has no switch that keeps an IPv4-only host off IPv6: it asks for AAAA
records and tries them ("Cannot assign requested address"), and it treats a
missing family as temporary, so the undeliverable bounce stays deferred until
its lifetime ends and then goes to the local postmaster.
"""

from __future__ import annotations

import ipaddress

import pytest
from conftest import STUDY_VARIANTS, labs_with
from helpers import dns_queries, explain, mailbox

sendmail_labs = labs_with("sendmail")  # module scope: removed before the next module starts its labs


@pytest.mark.parametrize("key", STUDY_VARIANTS)
def test_verdict_holds_with_sendmail_everywhere(sendmail_labs, key) -> None:
    result = sendmail_labs[key].result
    assert result.passed, explain(result)


def test_ipv4_only_relay_still_tries_ipv6(sendmail_labs) -> None:
    lab = sendmail_labs[("relay-bounce", "broken")]
    assert lab.host("relay").check_output("ip -6 -o addr show") == ""  # the host has no IPv6 at all...
    log = lab.mail_log("relay")
    mail_v6 = lab.address("mail", "ipv6")
    # Sendmail logs IPv6 addresses uncompressed (each group without leading zeros).
    uncompressed = "IPv6:" + ":".join(f"{int(x, 16):x}" for x in ipaddress.ip_address(mail_v6).exploded.split(":"))
    assert f"makeconnection (mail.skimbee.net. [{uncompressed}].25 (10)) failed: Cannot assign requested address" in log
    assert any(q["type"] == "AAAA" for q in dns_queries(lab, "relay"))  # ...yet Sendmail asks for AAAA


def test_relay_bounce_broken_bounce_deferred_at_the_relay(sendmail_labs) -> None:
    lab = sendmail_labs[("relay-bounce", "broken")]
    log = lab.mail_log("relay")
    assert "DSN: User unknown" in log
    assert "stat=Deferred" in log
    bounces = [e for e in lab.queue("relay") if e.sender in ("", "<>", "MAILER-DAEMON")]
    assert bounces and bounces[0].recipients == ("user@skimbee.net",) and bounces[0].state == "deferred"
    assert mailbox(lab, "user@skimbee.net") == []
    assert "reject=550 5.1.1" in lab.mail_log("mx10")


def test_mx_routing_broken_bounce_deferred_at_mx20(sendmail_labs) -> None:
    lab = sendmail_labs[("mx-routing", "broken")]
    assert lab.result.histories["m1"].path == ["relay", "mx30", "mx20"]
    log = lab.mail_log("mx20")
    assert "stat=Deferred: mail.skimbee.net.: Network is unreachable" in log
    [bounce] = lab.queue("mx20")
    assert bounce.recipients == ("user@skimbee.net",) and bounce.state == "deferred"
    assert mailbox(lab, "user@skimbee.net") == []


def test_fixed_variants_deliver_the_bounce_into_dovecot(sendmail_labs) -> None:
    for key in (("mx-routing", "fixed"), ("relay-bounce", "fixed")):
        lab = sendmail_labs[key]
        [dsn] = mailbox(lab, "user@skimbee.net")
        assert lab.result.histories["m1"].message_id in dsn
        assert "report-type=delivery-status" in dsn
        assert "mailer=lmtptcp" in lab.mail_log("mail")
