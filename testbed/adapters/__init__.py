"""One adapter per piece of software: all per-software knowledge lives behind these."""

from __future__ import annotations

from .base import (
    ClientOutcome,
    ClientRequest,
    ClientAdapter,
    DnsAdapter,
    HostAdapter,
    MailstoreAdapter,
    MtaAdapter,
    RenderedFile,
    RouterAdapter,
)
from . import registry
from .registry import adapter_for, known_software, mta_adapter, mtas, self_storing, software_by_kind, suites

__all__ = [
    "ClientAdapter",
    "ClientOutcome",
    "ClientRequest",
    "DnsAdapter",
    "HostAdapter",
    "MailstoreAdapter",
    "MtaAdapter",
    "RenderedFile",
    "RouterAdapter",
    "adapter_for",
    "known_software",
    "mta_adapter",
    "mtas",
    "self_storing",
    "software_by_kind",
    "registry",
    "suites",
]
