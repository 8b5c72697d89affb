"""The software registry: every adapter found, each role's interface, nothing listed twice."""

from __future__ import annotations

import pytest
from recorded import mx_routing_plan

from testbed import model
from testbed.adapters import (
    ClientAdapter,
    DnsAdapter,
    MailstoreAdapter,
    MtaAdapter,
    RouterAdapter,
    adapter_for,
    known_software,
    mta_adapter,
    registry,
)
from testbed.adapters.base import queue_id_in_reply
from testbed.plan import image_of
from testbed.render import host_files


def test_registry_finds_every_adapter_with_its_role() -> None:
    assert known_software() == ["curl", "dovecot", "exim", "linux", "msmtp", "outlook-model", "postfix", "python",
                                "sendmail", "swaks", "testbed-dns"]
    roles = {"postfix": MtaAdapter, "exim": MtaAdapter, "sendmail": MtaAdapter, "dovecot": MailstoreAdapter,
             "swaks": ClientAdapter, "curl": ClientAdapter, "msmtp": ClientAdapter, "testbed-dns": DnsAdapter,
             "linux": RouterAdapter, "python": ClientAdapter, "outlook-model": ClientAdapter}
    for software, role in roles.items():
        adapter = adapter_for(software, role)
        assert adapter.kind == role.kind and adapter.software == software
    with pytest.raises(KeyError, match="dovecot is not a mta"):
        mta_adapter("dovecot")
    with pytest.raises(KeyError, match="no adapter for 'qmail'"):
        adapter_for("qmail")


def test_model_and_plan_read_the_registry() -> None:
    assert model.SOFTWARE["mta"] == ("postfix", "exim", "sendmail")  # the default first
    assert model.SOFTWARE["mailstore"] == ("dovecot",)
    assert model.SELF_STORING == ("postfix",)
    assert model.SUITES == registry.SUITES == ("bookworm", "trixie")
    assert {s: image_of(s) for s in ("linux", "testbed-dns", "swaks", "exim")} == {
        "linux": "router", "testbed-dns": "dns", "swaks": "client", "exim": "exim"}
    assert set(registry.images()) == {"client", "dns", "dovecot", "exim", "postfix", "router", "sendmail"}


@pytest.mark.parametrize(("reply", "queue_id"), [
    ("250 2.0.0 Ok: queued as 4F3A1B2C", "4F3A1B2C"),  # Postfix
    ("250 OK id=1xXZF0-00001I-0s", "1xXZF0-00001I-0s"),  # Exim
    ("250 2.0.0 6AT7Ufni000090 Message accepted for delivery", "6AT7Ufni000090"),  # Sendmail
    ("250 2.0.0 Ok", None),
])
def test_each_mta_owns_its_reply_pattern(reply: str, queue_id: str | None) -> None:
    assert queue_id_in_reply(reply) == queue_id


def test_service_commands_come_from_the_adapter() -> None:
    plan = mx_routing_plan()
    files = {f.path: f for f in host_files(plan, plan.hosts["mx20"])}
    assert files["/etc/testbed/ready"].content == "#!/bin/sh\nss -Hltn 'sport = :25' | grep -q LISTEN\n"
    assert files["/etc/testbed/ready"].mode == 0o755
    assert "/etc/testbed/ready" not in {f.path for f in host_files(plan, plan.hosts["router"])}
    postfix = mta_adapter("postfix")
    assert postfix.stop_command() == "sh /etc/testbed/service stop"
    start = postfix.start_command()
    # Started without CAP_NET_ADMIN in its bounding set, like tb-init starts it.
    assert start.startswith("setpriv --inh-caps=-net_admin --bounding-set=-net_admin -- sh /etc/testbed/service start")
    assert start.endswith("&& until sh /etc/testbed/ready; do sleep 0.05; done")


def test_mailbox_readers_share_one_signature() -> None:
    assert mta_adapter("postfix").mailbox_command("brainbird.nl", "user") is not None
    assert mta_adapter("exim").mailbox_command("brainbird.nl", "user") is None
    doveadm = adapter_for("dovecot", MailstoreAdapter).mailbox_command("brainbird.nl", "user")
    assert "doveadm search -u user@brainbird.nl" in doveadm
    swaks = adapter_for("swaks", ClientAdapter)
    assert swaks.last_reply("<~  250 2.0.0 Ok: queued as ABC\n<~  221 2.0.0 Bye\n") == "250 2.0.0 Ok: queued as ABC"


def test_versions_are_read_by_each_adapter() -> None:
    from testbed.adapters import adapter_for

    curl = "curl 8.14.1 (x86_64-pc-linux-gnu) libcurl/8.14.1 OpenSSL/3.5.9 zlib/1.3.1\nRelease-Date: 2025-06-04\n"
    assert adapter_for("curl").parse_version(curl) == "curl 8.14.1"
    assert adapter_for("dovecot").parse_version("2.3.19.1 (9b53102964)\n") == "2.3.19.1 (9b53102964)"
