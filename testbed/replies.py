"""What a receiving MTA says when it accepts a message, and the queue id in it.

The sending MTA logs the receiver's reply; the receiver's software decides its
wording, so this is shared by all adapters rather than owned by one.
"""

from __future__ import annotations

import re

_PATTERNS = (
    re.compile(r"queued as (?P<id>[0-9A-Za-z]+)"),  # Postfix
    re.compile(r"\bOK id=(?P<id>[\w-]+)"),  # Exim
    re.compile(r"(?:^|\s)(?P<id>[0-9A-Za-z]{10,20}) Message accepted for delivery"),  # Sendmail
)


def queue_id_in_reply(reply: str) -> str | None:
    for pattern in _PATTERNS:
        m = pattern.search(reply)
        if m:
            return m["id"]
    return None
