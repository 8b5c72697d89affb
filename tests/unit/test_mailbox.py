"""Reading Maildir dumps: a real Postfix bounce is recognised and linked to its message."""

from __future__ import annotations

from pathlib import Path

from testbed.mailbox import maildir_dump_command, parse_maildir_dump
from testbed.track import dsn_in_mailbox

DSN = (Path(__file__).resolve().parents[1] / "data" / "postfix" / "dsn-bookworm.eml").read_text()


def dump(*messages: str) -> str:
    return "".join(f"\n==> testbed-message /m/new/{i}\n{m}" for i, m in enumerate(messages))


def test_dsn_is_recognised_and_refers_to_the_original() -> None:
    [msg] = parse_maildir_dump(dump(DSN))
    assert msg.is_dsn
    assert msg.message_id == "<20261129072041.2B7BC184202@relay.skimbee.net>"
    assert any(r.startswith("<m1.") for r in msg.refers_to)
    assert dsn_in_mailbox([msg], msg.refers_to[0])


def test_plain_message_is_not_a_dsn() -> None:
    plain = "From: a@b.c\nMessage-Id: <x@y>\nSubject: hi\n\nbody mentioning Message-ID: <z@y>\n"
    [msg] = parse_maildir_dump(dump(plain))
    assert not msg.is_dsn and msg.refers_to == () and msg.subject == "hi"


def test_empty_and_several() -> None:
    assert parse_maildir_dump("") == []
    assert len(parse_maildir_dump(dump(DSN, "Subject: x\n\n"))) == 2


def test_command_quotes_the_path() -> None:
    assert "'/var/mail/a b'/new" in maildir_dump_command("/var/mail/a b/")
