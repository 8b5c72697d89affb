"""Normalised mail events: what every MTA adapter turns its log into.

Events are host-local (a queue id means something only on its host); the
tracker links them across hosts into message histories.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    RECEIVED = "received"  # the host took the message into its queue
    MESSAGE_ID = "message_id"  # queue id <-> Message-ID header
    SENDER = "sender"  # queue id -> envelope sender
    RELAYED = "relayed"  # handed to the next MTA over SMTP
    DELIVERED = "delivered"  # into a mailbox (local, virtual or LMTP)
    DEFERRED = "deferred"  # temporary failure; stays queued
    BOUNCED = "bounced"  # permanent failure for a recipient
    REJECTED = "rejected"  # this host refused a recipient during SMTP
    DSN = "dsn"  # a delivery status notification was generated (dsn_queue_id)
    EXPIRED = "expired"  # queue lifetime exceeded
    FROZEN = "frozen"  # held by the MTA (Exim)
    DISCARDED = "discarded"  # dropped without notice to anyone
    REMOVED = "removed"  # gone from the queue
    NOTE = "note"  # a line worth showing as evidence (a warning, a connect failure)


@dataclass(frozen=True)
class MailEvent:
    kind: Kind
    host: str = ""
    seq: int = 0  # position in the host's log; orders events on one host
    time: str = ""
    queue_id: str | None = None
    message_id: str | None = None
    sender: str | None = None
    recipient: str | None = None
    relay_name: str | None = None
    relay_address: str | None = None
    next_queue_id: str | None = None  # the receiving MTA's queue id, from its reply
    dsn_queue_id: str | None = None
    status: str | None = None  # enhanced status code, e.g. 5.1.1
    reason: str | None = None
    line: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass(frozen=True)
class QueueEntry:
    queue_id: str
    state: str  # incoming | active | deferred | hold | frozen
    sender: str
    recipients: tuple[str, ...]
    reason: str | None = None

    @property
    def in_flight(self) -> bool:
        """The MTA is working on it right now (not waiting for a retry)."""
        return self.state in ("incoming", "active", "maildrop")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


@dataclass(frozen=True)
class MailboxMessage:
    """One message found in a mailbox."""

    path: str
    message_id: str | None
    subject: str | None
    sender: str | None
    is_dsn: bool
    #: For a DSN: the Message-IDs found in the returned message or headers.
    refers_to: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ServerConnection:
    """A client connection a server logged (its own log line, not the client's capture)."""

    host: str  # the lab host whose log says so
    client_address: str
    client_port: int | None = None  # None where the software does not log it (Sendmail)
    #: Epoch seconds when the log has a full timestamp (None: only a syslog date without a year).
    time: float | None = None
    time_text: str = ""
    line: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}
