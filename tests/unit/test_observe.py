"""Reading queues, logs, mailboxes and versions out of a lab (a fake one replaying a recorded run)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BOUNCE
from fakelab import FakeLab
from recorded import DATA

from testbed import observe
from testbed.errors import LabError

DSN = (DATA / "postfix" / "dsn-bookworm.eml").read_text()


def test_queues_are_parsed_and_a_stopped_host_has_none(exim_lab: FakeLab) -> None:
    exim_lab.stop("mx10")
    queues = observe.queues(exim_lab)
    assert queues["mx10"] is None
    assert queues["relay"] == [] and queues["mx30"] == []
    [entry] = queues["mx20"]
    assert (entry.queue_id, entry.state, entry.recipients) == (BOUNCE, "deferred", ("user@skimbee.net",))
    assert entry.reason == "user@skimbee.net R=dnslookup T=remote_smtp defer (101): Network is unreachable"
    assert observe.queues(exim_lab, ["mx20"]).keys() == {"mx20"}


def test_mail_logs_are_read_whole_and_parsed_per_adapter(exim_lab: FakeLab) -> None:
    exim_lab.stop("mail")
    logs = observe.mail_logs(exim_lab)
    assert logs["mail"] == ""  # down: nothing to read
    assert logs["mx30"].count("\n") == 11 and logs["mx20"].count("\n") == 9
    events = observe.events_from_logs(exim_lab.plan, logs)
    assert {e.host for e in events} == {"relay", "mx10", "mx20", "mx30"}
    deferred = {e.queue_id for e in events if e.kind == "deferred" and e.host == "mx20"}
    assert deferred == {"1xXZw5-00004E-22", "1xXZw5-00004H-34"}
    assert not any(e.kind == "dsn" for e in events)  # mx20 logs its bounce only once flushed


def test_a_log_that_cannot_be_read_is_an_error_not_an_empty_log(tmp_path: Path, exim_lab: FakeLab) -> None:
    class Unreadable(FakeLab):
        def read_file(self, host: str, path: str) -> str:
            raise LabError(f"cannot read {path} on {host} (exit 1): cat: Permission denied")

    lab = Unreadable(exim_lab.plan, tmp_path / "other")
    with pytest.raises(LabError, match="cannot read /var/log/testbed/exim/mainlog"):
        observe.mail_logs(lab)


def test_mailboxes_are_read_over_imap_from_the_client(exim_lab: FakeLab) -> None:
    exim_lab.answer("client", "python3 -c", f"\n==> testbed-message INBOX/1\n{DSN}")
    boxes = observe.mailboxes(exim_lab)
    assert boxes.keys() == {"user@brainbird.nl", "user@skimbee.net"}
    [dsn] = boxes["user@skimbee.net"]
    assert dsn.is_dsn and dsn.message_id == "<20261129072041.2B7BC184202@relay.skimbee.net>"
    imap = [c for c in exim_lab.commands("client") if "imaplib" in c]
    assert len(imap) == 2 and any("user@skimbee.net" in c for c in imap)


def test_a_mailbox_that_cannot_be_read_is_none(exim_lab: FakeLab) -> None:
    exim_lab.answer("client", "python3 -c", "imaplib.error: LOGIN failed", rc=1)
    assert observe.mailboxes(exim_lab) == {"user@brainbird.nl": None, "user@skimbee.net": None}


def test_versions_ask_one_running_host_per_software(exim_lab: FakeLab) -> None:
    exim_lab.stop("relay")
    for host in ("mail", "mx10", "mx20", "mx30"):
        exim_lab.answer(host, "exim4 -bV", "4.96\n")
    exim_lab.answer("bb-imap", "dovecot --version", "2.3.19.1 (9b53102964)\n")
    assert observe.versions(exim_lab) == {"exim": "4.96", "dovecot": "2.3.19.1 (9b53102964)"}
    assert sum("exim4 -bV" in c for _, c in exim_lab.calls) == 1


def test_the_dns_query_log(exim_lab: FakeLab) -> None:
    assert observe.dns_query_log(exim_lab) == ""  # not written yet
    exim_lab.put("dns", "/var/log/testbed/dns-queries.jsonl", '{"name": "mx20.brainbird.nl", "type": "AAAA"}\nnot json\n')
    assert observe.parse_query_log(observe.dns_query_log(exim_lab)) == [{"name": "mx20.brainbird.nl", "type": "AAAA"}]
