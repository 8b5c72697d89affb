"""Reading Maildir mailboxes inside a container (pure: a command and a parser)."""

from __future__ import annotations

import email
import email.message
import email.policy
import re
import shlex

from .events import DsnRecipient, DsnReport, MailboxMessage

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


def _typed(value: str | None) -> str | None:
    """ "rfc822; user@x" -> "user@x", "dns; mx10.example" -> "mx10.example" (RFC 3464's address-type / mta-name-type)."""
    if value is None:
        return None
    value = " ".join(str(value).split())
    return value.partition(";")[2].strip() if ";" in value else value


def parse_dsn(msg: email.message.Message) -> DsnReport | None:
    """The RFC 3464 fields of a multipart/report; report-type=delivery-status message.

    Python's email package reads a message/delivery-status part as a list of
    header blocks: the per-message fields first, then one block per recipient.
    """
    status = next((p for p in msg.walk() if p.get_content_type() == "message/delivery-status"), None)
    if status is None:
        return None
    blocks = status.get_payload()
    if not isinstance(blocks, list) or not blocks:
        return DsnReport(None, ())
    recipients = tuple(
        DsnRecipient(
            final_recipient=_typed(b.get("Final-Recipient")),
            action=(b.get("Action") or "").strip().lower() or None,
            status=(b.get("Status") or "").strip().split(" ")[0] or None,
            original_recipient=_typed(b.get("Original-Recipient")),
            remote_mta=_typed(b.get("Remote-MTA")),
            diagnostic_code=" ".join(str(b.get("Diagnostic-Code")).split()) if b.get("Diagnostic-Code") else None,
        )
        for b in blocks[1:]
        if b.get("Final-Recipient") or b.get("Action") or b.get("Status")
    )
    returned = None
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822" and isinstance(part.get_payload(), list) and part.get_payload():
            returned = part.get_payload()[0].get("Message-ID")
        elif ctype == "text/rfc822-headers":
            returned = email.message_from_string(part.get_payload(decode=False) or "").get("Message-ID")
        if returned:
            break
    return DsnReport(_typed(blocks[0].get("Reporting-MTA")), recipients,
                     returned.strip() if isinstance(returned, str) else None)


def parse_message(path: str, raw: str) -> MailboxMessage:
    msg = email.message_from_string(raw, policy=email.policy.compat32)
    own_id = (msg.get("Message-ID") or "").strip() or None
    ctype = msg.get_content_type()
    is_dsn = ctype == "multipart/report" and msg.get_param("report-type", "").lower() == "delivery-status"
    refers: list[str] = []
    dsn = None
    if is_dsn:
        dsn = parse_dsn(msg)
        if dsn is not None and dsn.returned_message_id:
            refers.append(dsn.returned_message_id)
        # A bounce that returns only part of the message (or names it in its text) still refers to it.
        _, _, body = raw.partition("\n\n")
        refers += [m for m in _MSGID_RE.findall(body) if m != own_id]
    return MailboxMessage(
        path=path,
        message_id=own_id,
        subject=msg.get("Subject"),
        sender=msg.get("From"),
        is_dsn=is_dsn,
        refers_to=tuple(dict.fromkeys(refers)),
        dsn=dsn,
    )
