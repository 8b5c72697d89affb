"""What one client step did: the request, the resolver's answer, each connection attempt, the outcome.

Pure: built by the scenario from the client's ``tb-trace`` output (parsed by
``clienttrace``) and its adapter's reading of the client's own output; the
verdict, result.json and the report read it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from .adapters import ClientOutcome
from .clienttrace import Attempt, ClientTrace


def family_of(address: str) -> str:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


@dataclass
class ClientResult:
    id: str
    host: str
    software: str
    version: str
    #: What a behaviour model stands for (None: the real software ran).
    model_of: str | None
    model_source: str | None
    resolver: str
    resolver_model_of: str | None
    action: str
    protocol: str
    server: str
    port: int
    family: str
    timeout_s: float
    labels: dict[str, Any]
    trace: ClientTrace
    outcome: ClientOutcome
    #: server address -> lab host name, for the report.
    hosts_by_address: dict[str, str] = field(default_factory=dict)
    #: The scenario step (``id`` is ``STEP.N`` for run N of a repeated step).
    step: str = ""
    run: int | None = None
    #: attempt index -> the lab host whose own log shows this connection (serverside.attribute).
    received_by: dict[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.step = self.step or self.id

    @property
    def received_by_connected(self) -> str | None:
        """The server whose log shows the connection that worked."""
        got = self.connected
        if got is None:
            return None
        return next((self.received_by[i] for i, a in enumerate(self.attempts) if a is got and i in self.received_by),
                    None)

    @property
    def connected(self) -> Attempt | None:
        return self.trace.connected

    @property
    def attempts(self) -> list[Attempt]:
        return self.trace.attempts

    @property
    def total_ms(self) -> float:
        return self.trace.total_ms

    @property
    def resolved(self) -> list[str]:
        """The addresses the client got for the server's name, in the order it got them."""
        for lookup in self.trace.lookups:
            if lookup.name.rstrip(".").lower() == self.server.lower():
                return list(lookup.addresses)
        return []

    @property
    def resolver_error(self) -> str | None:
        for lookup in self.trace.lookups:
            if lookup.name.rstrip(".").lower() == self.server.lower():
                return lookup.error
        model = self.trace.resolver or {}
        return model.get("error")

    @property
    def window(self) -> tuple[float, float]:
        """Start and end (epoch seconds) of the step inside the client container."""
        return self.trace.started, self.trace.ended

    def summary(self) -> str:
        got = self.connected
        where = f"{got.address} ({self.hosts_by_address.get(got.address, '?')})" if got else "no server"
        ok = "ok" if self.outcome.ok else "failed"
        return (f"{self.software} via {self.resolver}: {ok}, connected to {where}, "
                f"{len(self.attempts)} attempt(s), {self.total_ms:.0f} ms")

    def to_dict(self) -> dict[str, Any]:
        got = self.connected
        return {
            "id": self.id,
            "host": self.host,
            "software": self.software,
            "version": self.version,
            "model": {"of": self.model_of, "source": self.model_source} if self.model_of else None,
            "resolver": {"name": self.resolver, "model_of": self.resolver_model_of,
                         "answer": self.trace.resolver},
            "action": self.action,
            "protocol": self.protocol,
            "server": self.server,
            "port": self.port,
            "family": self.family,
            "timeout_s": self.timeout_s,
            "labels": self.labels,
            "resolved": self.resolved,
            "resolver_error": self.resolver_error,
            "lookups": [lk.to_dict() for lk in self.trace.lookups],
            "step": self.step,
            "run": self.run,
            "attempts": [{**a.to_dict(), "host": self.hosts_by_address.get(a.address),
                          "received_by": self.received_by.get(i)} for i, a in enumerate(self.attempts)],
            "connected": ({**got.to_dict(), "host": self.hosts_by_address.get(got.address),
                           "received_by": self.received_by_connected} if got else None),
            "ok": self.outcome.ok,
            "reply": self.outcome.reply,
            "detail": self.outcome.detail,
            "total_ms": round(self.total_ms, 1),
            "started": self.trace.started,
            "ended": self.trace.ended,
            "rc": self.trace.rc,
        }
