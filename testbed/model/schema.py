"""The topology schema (pydantic): types, unknown keys, ranges, and the model's own helpers."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    field_validator,
)

from .. import adapters

Family = Literal["ipv4", "ipv6", "dual"]
FAMILIES_OF = {"ipv4": {"ipv4"}, "ipv6": {"ipv6"}, "dual": {"ipv4", "ipv6"}}
HostKind = Literal["mta", "dns", "client", "router", "mailstore"]
#: Debian releases every adapter supports (the adapters are the source).
SUITES = adapters.suites()

#: Software each kind of host may run; the first entry is the default.
SOFTWARE: dict[str, tuple[str, ...]] = adapters.software_by_kind()

#: MTAs that can keep mailboxes themselves (Postfix's virtual delivery to Maildir).
SELF_STORING = adapters.self_storing()

NAME_RE = r"^[a-z][a-z0-9-]{0,19}$"
FQDN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
ADDRESS_RE = re.compile(r"^[A-Za-z0-9._%+-]+@([a-z0-9-]+\.)+[a-z]{2,63}$")

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def _duration(value: Any) -> Any:
    """Accept 10, 10s, 500ms, 3m, 1h; return seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 10s, 500ms or 3m")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = _DURATION_RE.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError("expected a duration such as 10s, 500ms or 3m")


Duration = Annotated[float, BeforeValidator(_duration), Field(ge=0)]
Name = Annotated[str, Field(pattern=NAME_RE)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Pools(Strict):
    """Address pools segments are carved from (/24 and /64 per segment)."""

    ipv4: ipaddress.IPv4Network = ipaddress.IPv4Network("198.18.0.0/15")
    ipv6: ipaddress.IPv6Network = ipaddress.IPv6Network("2001:db8::/32")

    @field_validator("ipv4")
    @classmethod
    def _v4_room(cls, net: ipaddress.IPv4Network) -> ipaddress.IPv4Network:
        if net.prefixlen > 24:
            raise ValueError("the IPv4 pool must be a /24 or larger")
        return net

    @field_validator("ipv6")
    @classmethod
    def _v6_room(cls, net: ipaddress.IPv6Network) -> ipaddress.IPv6Network:
        if net.prefixlen > 64:
            raise ValueError("the IPv6 pool must be a /64 or larger")
        return net


class Timing(Strict):
    """Compressed mail timing shared by every MTA of the lab."""

    retry: Duration = 10.0
    max_retry: Duration = 30.0
    queue_lifetime: Duration = 180.0
    bounce_lifetime: Duration = 180.0
    connect_timeout: Duration = 2.0
    settle_timeout: Duration = 120.0
    settle_quiet: Duration = 1.0


class Segment(Strict):
    family: Family
    subnet_v4: ipaddress.IPv4Network | None = None
    subnet_v6: ipaddress.IPv6Network | None = None
    description: str = ""

    @field_validator("subnet_v4")
    @classmethod
    def _v4_size(cls, net: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network | None:
        if net is not None and net.prefixlen > 25:
            raise ValueError("a segment needs at least a /25")
        return net

    @field_validator("subnet_v6")
    @classmethod
    def _v6_size(cls, net: ipaddress.IPv6Network | None) -> ipaddress.IPv6Network | None:
        if net is not None and net.prefixlen > 64:
            raise ValueError("a segment needs at least a /64")
        return net


class Host(Strict):
    kind: HostKind
    software: str | None = None
    segment: Name | None = None
    segments: list[Name] | None = None
    stack: Family | None = None
    fqdn: str | None = None
    id: int | None = Field(None, ge=2, le=127, description="host part of its addresses")
    description: str = ""

    @field_validator("fqdn")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        if value is not None and not FQDN_RE.match(value.rstrip(".")):
            raise ValueError("expected a fully qualified lower-case name such as mx10.example.net")
        return value.rstrip(".") if value else value


class Domain(Strict):
    mx: dict[Name, int] = Field(default_factory=dict)
    mailboxes: list[Annotated[str, Field(pattern=r"^[a-z0-9._+-]+$")]] = Field(default_factory=list)
    mailbox_host: Name | None = None
    #: A Dovecot host holding the mailboxes; the mailbox host delivers to it over LMTP.
    mailstore: Name | None = None
    relay: Name | None = None

    @field_validator("mx")
    @classmethod
    def _prefs(cls, mx: dict[str, int]) -> dict[str, int]:
        for host, pref in mx.items():
            if not 0 <= pref <= 65535:
                raise ValueError(f"MX preference of {host} must be 0..65535")
        return mx


class DnsRecord(Strict):
    name: str
    type: Literal["A", "AAAA", "MX", "PTR", "CNAME", "TXT", "NS"]
    data: str
    ttl: int | None = Field(None, ge=0)


class DnsOmit(Strict):
    name: str
    type: Literal["A", "AAAA", "MX", "PTR", "CNAME", "TXT", "NS"] | None = None


class DnsSettings(Strict):
    server: Name | None = None
    ttl: int = Field(60, ge=0)
    records: list[DnsRecord] = Field(default_factory=list)
    omit: list[DnsOmit] = Field(default_factory=list)
    rules: list[dict[str, Any]] = Field(default_factory=list)


# --- scenario steps ------------------------------------------------------


class SendSpec(Strict):
    id: Name
    sender: str = Field(alias="from")
    to: list[str]
    via: Name
    client: Name | None = None
    family: Literal["any", "ipv4", "ipv6"] = "any"
    subject: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not ADDRESS_RE.match(value):
            raise ValueError("expected an address such as user@example.net")
        return value

    @field_validator("to")
    @classmethod
    def _rcpts(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one recipient")
        for rcpt in value:
            if not ADDRESS_RE.match(rcpt):
                raise ValueError(f"expected addresses such as user@example.net, got {rcpt!r}")
        return value


class SettleSpec(Strict):
    timeout: Duration | None = None


class SendStep(Strict):
    send: SendSpec


class StopStep(Strict):
    stop: Name


class StartStep(Strict):
    start: Name


class StopServiceStep(Strict):
    stop_service: Name


class StartServiceStep(Strict):
    start_service: Name


class FlushStep(Strict):
    flush: list[Name] | Literal["all"]

    @field_validator("flush", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) and value != "all" else value


class SettleStep(Strict):
    settle: SettleSpec = SettleSpec()

    @field_validator("settle", mode="before")
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value


class DnsStepSpec(Strict):
    set: list[dict[str, Any]] | None = None
    add: list[dict[str, Any]] | None = None
    clear: bool = False


class DnsStep(Strict):
    dns: DnsStepSpec


STEP_KINDS: dict[str, type[Strict]] = {
    "send": SendStep,
    "stop": StopStep,
    "start": StartStep,
    "stop_service": StopServiceStep,
    "start_service": StartServiceStep,
    "flush": FlushStep,
    "settle": SettleStep,
    "dns": DnsStep,
}


def _single_key(kinds: Iterable[str]):
    names = set(kinds)

    def pick(value: Any) -> str | None:
        if isinstance(value, BaseModel):
            return next(k for k in names if k in type(value).model_fields)
        if isinstance(value, Mapping):
            keys = [k for k in value if k in names]
            if len(keys) == 1:
                return keys[0]
        return None

    return pick


Step = Annotated[
    Annotated[SendStep, Tag("send")]
    | Annotated[StopStep, Tag("stop")]
    | Annotated[StartStep, Tag("start")]
    | Annotated[StopServiceStep, Tag("stop_service")]
    | Annotated[StartServiceStep, Tag("start_service")]
    | Annotated[FlushStep, Tag("flush")]
    | Annotated[SettleStep, Tag("settle")]
    | Annotated[DnsStep, Tag("dns")],
    Discriminator(
        _single_key(STEP_KINDS),
        custom_error_type="step_kind",
        custom_error_message="expected a step with exactly one of: " + ", ".join(STEP_KINDS),
    ),
]

# --- expectations ----------------------------------------------------------

MessageState = Literal["delivered", "returned", "queued", "bounce-queued", "lost"]


class Expectation(Strict):
    description: str = ""
    #: Only check when these hosts run this software (per-MTA outcomes differ).
    when: dict[Name, list[str]] = Field(default_factory=dict)

    @field_validator("when", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: [v] if isinstance(v, str) else v for k, v in value.items()}
        return value


class MessageExpect(Expectation):
    message: Name
    state: MessageState | None = None
    delivered: bool | None = None
    path: list[Name] | None = None
    dsn_generated_at: Name | None = None
    dsn_delivered: bool | None = None
    queued_at: list[Name] | None = None


class DnsQueryCheck(Strict):
    """Filters (all optional) over the DNS query log, then checks on what is left."""

    client: Name | None = None
    name: str | None = None
    type: list[str] | None = None
    rcode: str | None = None
    rule: str | None = None  # the behaviour rule that answered
    count: int | None = Field(None, ge=0)
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    #: Every matching query arrived within this many ms of the others (e.g. A and AAAA in parallel).
    within_ms: float | None = Field(None, ge=0)

    @field_validator("type", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DnsExpect(Expectation):
    dns: DnsQueryCheck


class MailboxCheck(Strict):
    address: str
    count: int | None = Field(None, ge=0)
    dsn_for: Name | None = None
    has_message: Name | None = None
    absent_message: Name | None = None


class MailboxExpect(Expectation):
    mailbox: MailboxCheck


class QueueCheck(Strict):
    host: Name
    count: int | None = Field(None, ge=0)
    message: Name | None = None


class QueueExpect(Expectation):
    queue: QueueCheck


class LogCheck(Strict):
    host: Name
    pattern: str
    present: bool = True

    @field_validator("pattern")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


class LogExpect(Expectation):
    log: LogCheck


EXPECT_KINDS = ("message", "dns", "mailbox", "queue", "log")

Expect = Annotated[
    Annotated[MessageExpect, Tag("message")]
    | Annotated[DnsExpect, Tag("dns")]
    | Annotated[MailboxExpect, Tag("mailbox")]
    | Annotated[QueueExpect, Tag("queue")]
    | Annotated[LogExpect, Tag("log")],
    Discriminator(
        _single_key(EXPECT_KINDS),
        custom_error_type="expect_kind",
        custom_error_message="expected an expectation with exactly one of: " + ", ".join(EXPECT_KINDS),
    ),
]


class Variant(Strict):
    description: str = ""
    patch: dict[str, Any] = Field(default_factory=dict)


class Topology(Strict):
    name: Name
    title: str = ""
    study: str = ""
    description: str = ""
    base_variant: Name = "default"
    suite: Literal[SUITES] = SUITES[0]  # type: ignore[valid-type]
    pools: Pools = Pools()
    timing: Timing = Timing()
    segments: dict[Name, Segment]
    hosts: dict[Name, Host]
    domains: dict[str, Domain] = Field(default_factory=dict)
    dns: DnsSettings = DnsSettings()
    scenario: list[Step] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)
    variants: dict[Name, Variant] = Field(default_factory=dict)
    #: Filled in by the loader: the variant this model describes.
    variant: str = ""

    def host_stack(self, name: str) -> str:
        """A host's protocol stack: explicit, else its segment's family (routers: dual)."""
        host = self.hosts[name]
        if host.stack:
            return host.stack
        if host.kind == "router" or host.segment not in self.segments:
            return "dual"
        return self.segments[host.segment].family

    def software_of(self, name: str) -> str:
        host = self.hosts[name]
        return host.software or SOFTWARE[host.kind][0]

    def fqdn_of(self, name: str) -> str:
        return self.hosts[name].fqdn or f"{name}.{self.name}.test"

    def hosts_of_kind(self, kind: str) -> list[str]:
        return [n for n, h in self.hosts.items() if h.kind == kind]

    def dns_server(self) -> str | None:
        if self.dns.server:
            return self.dns.server
        servers = self.hosts_of_kind("dns")
        return servers[0] if len(servers) == 1 else None

    def mailbox_host(self, domain: str) -> str | None:
        dom = self.domains[domain]
        if dom.mailbox_host:
            return dom.mailbox_host
        if not dom.mx:
            return None
        return min(dom.mx.items(), key=lambda kv: kv[1])[0]

    def messages(self) -> dict[str, SendSpec]:
        return {s.send.id: s.send for s in self.scenario if isinstance(s, SendStep)}


__all__ = [
    "Family",
    "FAMILIES_OF",
    "HostKind",
    "SUITES",
    "SOFTWARE",
    "SELF_STORING",
    "NAME_RE",
    "FQDN_RE",
    "ADDRESS_RE",
    "Duration",
    "Name",
    "Strict",
    "Pools",
    "Timing",
    "Segment",
    "Host",
    "Domain",
    "DnsRecord",
    "DnsOmit",
    "DnsSettings",
    "SendSpec",
    "SettleSpec",
    "SendStep",
    "StopStep",
    "StartStep",
    "StopServiceStep",
    "StartServiceStep",
    "FlushStep",
    "SettleStep",
    "DnsStepSpec",
    "DnsStep",
    "STEP_KINDS",
    "Step",
    "MessageState",
    "Expectation",
    "MessageExpect",
    "DnsQueryCheck",
    "DnsExpect",
    "MailboxCheck",
    "MailboxExpect",
    "QueueCheck",
    "QueueExpect",
    "LogCheck",
    "LogExpect",
    "EXPECT_KINDS",
    "Expect",
    "Variant",
    "Topology",
]
