"""One adapter per kind of software: all per-MTA knowledge lives behind these."""

from __future__ import annotations

from .base import HostAdapter, MtaAdapter, RenderedFile
from .client import SwaksClient
from .dns import DnsServerAdapter
from .dovecot import DovecotAdapter
from .exim import EximAdapter
from .postfix import PostfixAdapter
from .router import RouterAdapter
from .sendmail import SendmailAdapter

_ADAPTERS: dict[str, HostAdapter] = {
    a.software: a
    for a in (
        PostfixAdapter(),
        EximAdapter(),
        SendmailAdapter(),
        DovecotAdapter(),
        DnsServerAdapter(),
        SwaksClient(),
        RouterAdapter(),
    )
}


def adapter_for(software: str) -> HostAdapter:
    try:
        return _ADAPTERS[software]
    except KeyError:
        raise KeyError(f"no adapter for {software!r}; known: {', '.join(sorted(_ADAPTERS))}") from None


def mta_adapter(software: str) -> MtaAdapter:
    adapter = adapter_for(software)
    if not isinstance(adapter, MtaAdapter):
        raise KeyError(f"{software} is not an MTA")
    return adapter


def known_software() -> list[str]:
    return sorted(_ADAPTERS)


__all__ = ["HostAdapter", "MtaAdapter", "RenderedFile", "adapter_for", "mta_adapter", "known_software"]
