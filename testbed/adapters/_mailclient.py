"""What the real mail clients' adapters share: the message they submit, ``send_command`` on top of
``client_command``, and reading the decisive line out of a transcript.

Not an adapter module (the registry skips names starting with ``_``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

from .base import ClientRequest

FAMILY_FLAGS = {"any": (), "ipv4": ("-4",), "ipv6": ("-6",)}


def message_text(req: ClientRequest) -> str:
    """The RFC 5322 message a client submits (CRLF line ends), naming the run's Message-ID."""
    headers = [
        f"From: {req.sender}",
        f"To: {', '.join(req.recipients)}",
        f"Subject: {req.subject or 'testbed message'}",
        f"Message-Id: {req.message_id}",
    ]
    return "\r\n".join([*headers, "", f"testbed message {req.message_id}", ""])


def family_flags(family: str) -> tuple[str, ...]:
    try:
        return FAMILY_FLAGS[family]
    except KeyError:
        raise ValueError(f"family {family!r}: one of any, ipv4, ipv6") from None


def whole_seconds(timeout_s: float) -> int:
    """A client that takes whole seconds: round up, at least 1 (0 often means 'no timeout')."""
    if timeout_s <= 0:
        raise ValueError(f"timeout {timeout_s!r}: must be positive")
    return max(1, math.ceil(timeout_s))


def check_request(software: str, req: ClientRequest, actions: Iterable[str], protocols: Iterable[str]) -> None:
    if req.action not in actions or req.protocol not in protocols:
        raise ValueError(f"{software} cannot {req.action} over {req.protocol}")
    if req.action == "submit" and not (req.sender and req.recipients):
        raise ValueError(f"{software}: a submission needs a sender and recipients")


#: An SMTP reply's status (a transcript's reply lines start with it).
SMTP_REPLY_RE = re.compile(r"^[2-5]\d\d[ -]")


def last_smtp_reply(replies: list[str]) -> str | None:
    """The reply to the end of DATA: the last complete reply but the one to QUIT."""
    final = [r for r in replies if re.match(r"^[2-5]\d\d( |$)", r)]
    for reply in reversed(final):
        if not reply.startswith("221"):
            return reply
    return None


def first_smtp_error(replies: list[str]) -> str | None:
    return next((r for r in replies if re.match(r"^[45]\d\d( |$)", r)), None)
