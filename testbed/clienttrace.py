"""PLACEHOLDER until the tracer branch lands (contract in /work/contract/clients.md)."""
from __future__ import annotations
from dataclasses import dataclass, field, asdict
from typing import Any


@dataclass(frozen=True)
class Lookup:
    name: str
    resolver: str
    started: float
    duration_ms: float
    addresses: list[str]
    error: str | None
    override: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Attempt:
    address: str
    family: str
    port: int
    started: float
    ended: float
    result: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ClientTrace:
    started: float
    ended: float
    rc: int
    stdout: str
    stderr: str
    lookups: list[Lookup] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    resolver: dict[str, Any] | None = None

    @property
    def connected(self) -> Attempt | None:
        return next((a for a in self.attempts if a.result == "connected"), None)

    @property
    def total_ms(self) -> float:
        return (self.ended - self.started) * 1000


def parse_trace(text: str, client_addrs: set[str]) -> ClientTrace:
    raise ValueError("placeholder")
