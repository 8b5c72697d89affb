"""Reading Maildir mailboxes inside a container (pure: a command and a parser)."""

from __future__ import annotations

import email
import email.policy
import re
import shlex

from .events import MailboxMessage

_MARKER = "==> testbed-message "
_MSGID_RE = re.compile(r"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)


def mailbox_password(address: str) -> str:
    """Every lab mailbox has the same, documented password (it is a lab)."""
    return "testbed"


def maildir_dump_command(maildir: str, limit: int = 262144) -> str:
    """Print every message of a Maildir, each after a marker line."""
    d = shlex.quote(maildir.rstrip("/"))
    return (
        f"find {d}/new {d}/cur -type f 2>/dev/null | sort | while read -r f; do "
        f"printf '\\n{_MARKER}%s\\n' \"$f\"; head -c {limit} \"$f\"; done"
    )


_IMAP_SCRIPT = """
import imaplib, sys
server, user, password = sys.argv[1:4]
imap = imaplib.IMAP4(server, 143)
imap.login(user, password)
imap.select("INBOX", readonly=True)
for num in imap.search(None, "ALL")[1][0].split():
    data = imap.fetch(num, "(BODY.PEEK[])")[1][0][1]
    sys.stdout.write("\\n%sINBOX/%s\\n" % (MARKER, num.decode()))
    sys.stdout.write(data.decode("utf-8", "replace").replace("\\r\\n", "\\n"))
imap.logout()
"""


def imap_dump_command(server: str, user: str, password: str) -> str:
    """Read a mailbox the way a user does: log in over IMAP and fetch every message.

    Run on a client host (it has python3); the output has the same markers as
    the Maildir dump, so one parser reads both.
    """
    script = _IMAP_SCRIPT.replace("MARKER", repr(_MARKER))
    return " ".join(shlex.quote(a) for a in ("python3", "-c", script, server, user, password))


def parse_maildir_dump(text: str) -> list[MailboxMessage]:
    messages = []
    chunks = text.split("\n" + _MARKER)
    for chunk in chunks[1:]:
        path, _, raw = chunk.partition("\n")
        messages.append(parse_message(path.strip(), raw))
    return messages


def parse_message(path: str, raw: str) -> MailboxMessage:
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    own_id = (msg.get("Message-ID") or "").strip() or None
    ctype = msg.get_content_type()
    is_dsn = ctype == "multipart/report" and msg.get_param("report-type", "").lower() == "delivery-status"
    refers: list[str] = []
    if is_dsn:
        _, _, body = raw.partition("\n\n")
        refers = [m for m in _MSGID_RE.findall(body) if m != own_id]
    return MailboxMessage(
        path=path,
        message_id=own_id,
        subject=msg.get("Subject"),
        sender=msg.get("From"),
        is_dsn=is_dsn,
        refers_to=tuple(dict.fromkeys(refers)),
    )
