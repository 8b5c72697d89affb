"""The topology schema (pydantic): types, unknown keys, ranges, and the model's own helpers."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, ClassVar, Literal, Union

import re2

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from .. import adapters

Family = Literal["ipv4", "ipv6", "dual"]
FAMILIES_OF = {"ipv4": {"ipv4"}, "ipv6": {"ipv6"}, "dual": {"ipv4", "ipv6"}}
HostKind = Literal["mta", "dns", "client", "router", "mailstore"]
#: Debian releases every adapter supports (the adapters are the source).
SUITES = adapters.suites()
#: Suites a single host's image may come from (any suite some adapter supports).
IMAGE_SUITES = tuple(dict.fromkeys(s for a in adapters.registry.all_adapters() for s in a.suites))

#: Software each kind of host may run; the first entry is the default.
SOFTWARE: dict[str, tuple[str, ...]] = adapters.software_by_kind()

#: MTAs that can keep mailboxes themselves (Postfix's virtual delivery to Maildir).
SELF_STORING = adapters.self_storing()

# Python's "$" also matches before a final newline: every pattern here is used
# with fullmatch (pydantic's patterns run on Rust's regex, where "$" is the end).
NAME_RE = r"^[a-z][a-z0-9-]{0,19}$"
FQDN_RE = re.compile(r"(?=.{1,253}\Z)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}")
#: A local part: starts with a letter or digit (no "-rf"), no empty dot-separated part (no "..").
LOCAL_PART_RE = re.compile(r"[a-z0-9][a-z0-9_+-]*(\.[a-z0-9_+-]+)*")
ADDRESS_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_%+-]*(\.[A-Za-z0-9_%+-]+)*@([a-z0-9-]+\.)+[a-z]{2,63}")
#: A DNS owner name of a record override: letters, digits, "-" and "_" (e.g. _dmarc), absolute or not.
DNS_NAME_RE = re.compile(r"(?=.{1,253}\.?\Z)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.)*"
                         r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?")

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
#: The longest duration: mail timing is compressed to seconds and minutes, never days.
MAX_DURATION_S = 86400.0
#: DNS TTLs are 31-bit (RFC 2181 section 8).
MAX_TTL = 2**31 - 1


def _positive(seconds: float) -> float:
    if seconds <= 0:
        raise ValueError("expected a duration above zero")
    return seconds


def _duration(value: Any) -> Any:
    """Accept 10, 10s, 500ms, 3m, 1h; return seconds (finite, at most a day)."""
    seconds: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION_RE.fullmatch(value)
        if match:
            seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds is None or math.isnan(seconds):
        raise ValueError("expected a duration such as 10s, 500ms or 3m")
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValueError(f"expected a duration from 0 to 1 day ({MAX_DURATION_S:.0f} s)")
    return seconds


#: Seconds, written as a number or with a unit ("10s", "500ms", "3m"); the JSON Schema says both.
Duration = Annotated[float, BeforeValidator(_duration), WithJsonSchema({
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_DURATION_S},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"},
    ],
    "description": "a duration: seconds, or a number with ms, s, m or h (10s, 500ms, 3m)",
})]
#: A duration above zero.
PositiveDuration = Annotated[Duration, AfterValidator(lambda v: _positive(v))]
Name = Annotated[str, Field(pattern=NAME_RE)]

#: Address ranges no lab segment may use: packets to them never reach a lab host.
SPECIAL_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), what) for net, what in (
        ("0.0.0.0/8", "'this network'"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved and broadcast"),
        ("::/8", "unspecified, loopback and IPv4-mapped"),
        ("fe80::/10", "link-local"),
        ("ff00::/8", "multicast"),
    )
)


def _not_special(net: Any) -> Any:
    if isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
        for special, what in SPECIAL_NETWORKS:
            if special.version == net.version and net.overlaps(special):
                raise ValueError(f"{net} overlaps {special} ({what}), which a lab cannot use")
    return net


def _regex(value: str) -> str:
    """A pattern RE2 accepts: matching takes linear time, so no pattern can hang a verdict."""
    try:
        compile_log_pattern(value)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
        raise ValueError(f"not a regular expression RE2 accepts: {reason}") from None
    return value


def compile_log_pattern(pattern: str) -> Any:
    """A log expectation's pattern, compiled by RE2 (multi-line: ^ and $ match at each line)."""
    options = re2.Options()
    options.log_errors = False
    return re2.compile("(?m)" + pattern, options=options)


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
        return _not_special(net)

    @field_validator("ipv6")
    @classmethod
    def _v6_room(cls, net: ipaddress.IPv6Network) -> ipaddress.IPv6Network:
        if net.prefixlen > 64:
            raise ValueError("the IPv6 pool must be a /64 or larger")
        return _not_special(net)


class Timing(Strict):
    """Compressed mail timing shared by every MTA of the lab."""

    retry: Duration = 10.0
    max_retry: Duration = 30.0
    queue_lifetime: Duration = 180.0
    bounce_lifetime: Duration = 180.0
    #: What a host that is down costs each attempt to reach it (no answer: the
    #: sender waits this long, then tries its next address). 1 s is the shortest
    #: every MTA can be told (Postfix, Exim and Sendmail take whole seconds) and
    #: still far beyond a lab connection's setup (0.02-0.04 s, no DAD), and below
    #: the kernel's 3 s of unanswered neighbour probes, so a dead host still reads
    #: "Connection timed out", not "No route to host".
    connect_timeout: Duration = 1.0
    settle_timeout: PositiveDuration = 120.0
    #: The logs must not have grown for this long, with nothing in flight (settle).
    settle_quiet: Duration = 0.5
    #: Pause between settle's probes (each probe is one exec per MTA, in parallel).
    settle_poll: Duration = 0.25
    #: A client's per-attempt connect timeout where the client has one (swaks, curl,
    #: msmtp, Python): compressed from their defaults (30 s and more) so that a
    #: sequential client's fallback after a black-holed address takes seconds, not minutes.
    client_timeout: PositiveDuration = 3.0


class Segment(Strict):
    family: Family
    subnet_v4: ipaddress.IPv4Network | None = None
    subnet_v6: ipaddress.IPv6Network | None = None
    description: str = ""
    #: A router of the segment sends router advertisements for its IPv6 prefix (radvd;
    #: autonomous, no default route). Hosts with ``privacy_addresses`` configure from them.
    advertise: bool = False

    @field_validator("subnet_v4")
    @classmethod
    def _v4_size(cls, net: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network | None:
        if net is not None and net.prefixlen > 25:
            raise ValueError("a segment needs at least a /25")
        return _not_special(net)

    @field_validator("subnet_v6")
    @classmethod
    def _v6_size(cls, net: ipaddress.IPv6Network | None) -> ipaddress.IPv6Network | None:
        if net is not None and net.prefixlen > 64:
            raise ValueError("a segment needs at least a /64")
        return _not_special(net)


class GaiEntry(Strict):
    """One ``precedence`` or ``label`` line of /etc/gai.conf: an IPv6 prefix and its value."""

    #: The kind of line whose rules apply (testbed/gaiconf.py); label and precedence share them.
    _kind: ClassVar[str] = "precedence"
    prefix: str
    value: Annotated[int, Field(strict=True)]

    @field_validator("prefix", "value")
    @classmethod
    def _gai_rules(cls, value: Any, info: ValidationInfo) -> Any:
        from .. import gaiconf

        check = gaiconf.prefix_problem if info.field_name == "prefix" else gaiconf.value_problem
        problem = check(cls._kind, value)
        if problem:
            raise ValueError(problem)
        return value


class GaiScopeEntry(GaiEntry):
    """One ``scopev4`` line: an IPv4 prefix (or ``::ffff:a.b.c.d/N``) and its scope, 0-15."""

    _kind: ClassVar[str] = "scopev4"


class GaiConf(Strict):
    """glibc's /etc/gai.conf for one host: a named table and/or explicit lines (testbed/gaiconf.py)."""

    #: glibc-default: glibc's built-in (RFC 3484) table written out; rfc6724: RFC 6724's table.
    table: Literal["glibc-default", "rfc6724"] | None = None
    precedence: list[GaiEntry] = Field(default_factory=list)
    label: list[GaiEntry] = Field(default_factory=list)
    scopev4: list[GaiScopeEntry] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        """Nothing given (``gai_conf: {}``): no file is written, the image's own applies."""
        return self.table is None and not (self.precedence or self.label or self.scopev4)

    def entries(self) -> dict[str, list[tuple[str, int]]]:
        return {kind: [(e.prefix, e.value) for e in getattr(self, kind)] for kind in ("precedence", "label", "scopev4")}
class RelayFrom(Strict):
    """Who may relay through a submission relay: hosts' planned addresses (/32, /128), segments' prefixes."""

    hosts: list[Name] = Field(default_factory=list)
    segments: list[Name] = Field(default_factory=list)


class Host(Strict):
    kind: HostKind
    software: str | None = None
    segment: Name | None = None
    segments: list[Name] | None = None
    stack: Family | None = None
    fqdn: str | None = None
    id: int | None = Field(None, ge=2, le=127, description="host part of its addresses")
    #: The Debian suite of this host's image, if not the lab's (bookworm's swaks beside trixie's).
    suite: Literal[IMAGE_SUITES] | None = None  # type: ignore[valid-type]
    #: Broken paths to this host per family from the start (``fault`` steps change them).
    faults: dict[Literal["ipv4", "ipv6"], Literal["blackhole", "refused"]] = Field(default_factory=dict)
    #: More host numbers per segment: each is one more address of this host there, in
    #: every family it has on that segment (``{clients: [40, 41]}``: .40 and ::40 too).
    addresses: dict[Name, list[Annotated[int, Field(ge=2, le=127)]]] = Field(default_factory=dict)
    description: str = ""
    #: glibc's /etc/gai.conf on this host (getaddrinfo's address-selection tables); None: the image's own.
    gai_conf: GaiConf | None = None
    #: RFC 4941 temporary addresses from its segment's router advertisements
    #: (use_tempaddr=2: connections leave from the temporary address).
    privacy_addresses: bool = False
    #: A submission relay's permitted clients, instead of every lab network.
    relay_from: RelayFrom | None = None

    @field_validator("fqdn")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        if value is not None and not FQDN_RE.fullmatch(value.removesuffix(".")):
            raise ValueError("expected a fully qualified lower-case name such as mx10.example.net")
        return value.removesuffix(".") if value else value


def _local_part(value: str) -> str:
    if not LOCAL_PART_RE.fullmatch(value):
        raise ValueError("expected a mailbox name such as user or first.last (letters, digits, '.', '_', "
                         "'+', '-'; starting with a letter or digit, no '..')")
    return value


def _dns_name(value: str) -> str:
    if not DNS_NAME_RE.fullmatch(value):
        raise ValueError("expected a DNS name such as mx10.example.net (letters, digits, '-', '_')")
    return value


class Domain(Strict):
    mx: dict[Name, Annotated[int, Field(strict=True)]] = Field(default_factory=dict)
    mailboxes: list[Annotated[str, AfterValidator(_local_part)]] = Field(default_factory=list)
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


DnsName = Annotated[str, AfterValidator(_dns_name)]


class DnsRecord(Strict):
    name: DnsName
    type: Literal["A", "AAAA", "MX", "PTR", "CNAME", "TXT", "NS"]
    data: str
    ttl: int | None = Field(None, ge=0, le=MAX_TTL)

    @model_validator(mode="after")
    def _as_the_server_reads_it(self) -> DnsRecord:
        """The lab DNS server's own record parser decides, so the file fails as the server would."""
        from ..dnsserver.config import record_problems

        problems = record_problems(self.name, self.type, self.data)
        if problems:
            raise ValueError("; ".join(problems))
        return self


class DnsOmit(Strict):
    name: DnsName
    type: Literal["A", "AAAA", "MX", "PTR", "CNAME", "TXT", "NS"] | None = None


class DnsSettings(Strict):
    server: Name | None = None
    ttl: int = Field(60, ge=0, le=MAX_TTL)
    records: list[DnsRecord] = Field(default_factory=list)
    #: More names for lab hosts: each name gets the A and AAAA records of every host listed,
    #: in this order (a name served by several hosts, e.g. for round robin).
    names: dict[DnsName, list[Name]] = Field(default_factory=dict)
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

    @field_validator("to", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if not ADDRESS_RE.fullmatch(value):
            raise ValueError("expected an address such as user@example.net")
        return value

    @field_validator("to")
    @classmethod
    def _rcpts(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("expected at least one recipient")
        for rcpt in value:
            if not ADDRESS_RE.fullmatch(rcpt):
                raise ValueError(f"expected addresses such as user@example.net, got {rcpt!r}")
        return value


class SettleSpec(Strict):
    #: None: the topology's timing.settle_timeout (0 is not "the default": it is refused).
    timeout: PositiveDuration | None = None


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

    @field_validator("flush", mode="before", json_schema_input_type=Name | list[Name] | Literal["all"])
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) and value != "all" else value


class SettleStep(Strict):
    settle: SettleSpec = SettleSpec()

    @field_validator("settle", mode="before", json_schema_input_type=SettleSpec | None)
    @classmethod
    def _empty(cls, value: Any) -> Any:
        return {} if value is None else value


class DnsStepSpec(Strict):
    set: list[dict[str, Any]] | None = None
    add: list[dict[str, Any]] | None = None
    clear: bool = False


class DnsStep(Strict):
    dns: DnsStepSpec


ClientAction = Literal["submit", "fetch", "connect"]
ClientProtocol = Literal["smtp", "imap", "pop3"]
#: The port each protocol is reached on in a lab.
PROTOCOL_PORTS = {"smtp": 25, "imap": 143, "pop3": 110}
#: The resolvers a client step can use: the client's own (glibc's getaddrinfo),
#: c-ares (real software: RFC 6724 sorting, ``tb-resolve-cares``) or a behaviour
#: model (``tb-resolver-model``); the client then gets their answer.
RESOLVERS = ("glibc", "c-ares", "macos-10.6-model")


class ClientSpec(Strict):
    """A client host resolves ``server`` and submits, fetches or connects, as its software does."""

    id: Name
    host: Name
    action: ClientAction = "connect"
    #: A DNS name, or a lab host's name (its FQDN is what the client resolves).
    server: str
    protocol: ClientProtocol | None = None  # default: smtp, or imap to fetch
    port: int | None = Field(None, ge=1, le=65535)
    resolver: Literal[RESOLVERS] = "glibc"  # type: ignore[valid-type]
    family: Literal["any", "ipv4", "ipv6"] = "any"
    #: Per connection attempt; default: timing.client_timeout.
    timeout: PositiveDuration | None = None
    sender: str | None = Field(None, alias="from")
    to: list[str] = Field(default_factory=list)
    subject: str | None = None
    #: For ``fetch``: whose mailbox (a mailbox of the topology's domains).
    mailbox: str | None = None
    #: Free labels shown in the report (a sweep sets its variable here).
    labels: dict[str, Any] = Field(default_factory=dict)
    #: Run the client this many times in a row, each resolving afresh (one traced
    #: run: ID.1 ... ID.N); a ``distribution`` expectation counts where they went.
    repeat: int = Field(1, ge=1, le=500)

    @field_validator("to", mode="before", json_schema_input_type=str | list[str])
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("server")
    @classmethod
    def _server(cls, value: str) -> str:
        if not re.fullmatch(NAME_RE, value) and not FQDN_RE.fullmatch(value.removesuffix(".")):
            raise ValueError("expected a lab host's name or a DNS name such as mail.example.net")
        return value.removesuffix(".")

    @field_validator("sender", "mailbox")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not ADDRESS_RE.fullmatch(value):
            raise ValueError("expected an address such as user@example.net")
        return value

    @property
    def the_protocol(self) -> str:
        return self.protocol or ("imap" if self.action == "fetch" else "smtp")

    @property
    def the_port(self) -> int:
        return self.port or PROTOCOL_PORTS[self.the_protocol]


class ClientStep(Strict):
    client: ClientSpec


FaultSetting = Literal["blackhole", "refused", "none"]


class FaultSpec(Strict):
    """Break (or mend) the paths to a host: per family, black-holed at its routers or refused at the host."""

    host: Name
    ipv4: FaultSetting | None = None
    ipv6: FaultSetting | None = None

    @model_validator(mode="after")
    def _some_family(self) -> FaultSpec:
        if self.ipv4 is None and self.ipv6 is None:
            raise ValueError("say what happens to ipv4 or ipv6 (blackhole, refused or none)")
        return self

    def settings(self) -> dict[str, str]:
        return {f: v for f, v in (("ipv4", self.ipv4), ("ipv6", self.ipv6)) if v is not None}


class FaultStep(Strict):
    fault: FaultSpec


STEP_KINDS: dict[str, type[Strict]] = {
    "send": SendStep,
    "stop": StopStep,
    "start": StartStep,
    "stop_service": StopServiceStep,
    "start_service": StartServiceStep,
    "flush": FlushStep,
    "settle": SettleStep,
    "dns": DnsStep,
    "client": ClientStep,
    "fault": FaultStep,
    "sweep": None,  # type: ignore[dict-item]  # SweepStep, defined below (it holds steps)
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


def _step_union(kinds: Mapping[str, type[Strict]]) -> Any:
    """A step is a mapping with exactly one key, which names its kind."""
    tagged = tuple(Annotated[cls, Tag(tag)] for tag, cls in kinds.items())
    return Annotated[
        Union[tagged],  # noqa: UP007 - built from the table, so not written out with |
        Discriminator(
            _single_key(STEP_KINDS),
            custom_error_type="step_kind",
            custom_error_message="expected a step with exactly one of: " + ", ".join(STEP_KINDS),
        ),
    ]


#: A step as it runs (a sweep's steps are these).
Step = _step_union({k: c for k, c in STEP_KINDS.items() if k != "sweep"})

_PLACEHOLDER_RE = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def _substitute(node: Any, name: str, value: Any) -> Any:
    """``{name}`` replaced in every string; a string that is only ``{name}`` becomes the value itself."""
    if isinstance(node, str):
        if node == "{" + name + "}":
            return value
        return node.replace("{" + name + "}", str(value))
    if isinstance(node, Mapping):
        return {_substitute(k, name, value): _substitute(v, name, value) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, name, value) for v in node]
    return node


class SweepSpec(Strict):
    """The same steps once per value of one variable (e.g. a DNS delay), ``{variable}`` substituted."""

    #: One variable and its values, e.g. ``{delay_ms: [0, 25, 50]}``.
    over: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], list[int | float | str]]
    steps: list[dict[str, Any]]

    @field_validator("over")
    @classmethod
    def _one_variable(cls, over: dict[str, list[Any]]) -> dict[str, list[Any]]:
        if len(over) != 1:
            raise ValueError("a sweep goes over exactly one variable, e.g. over: {delay_ms: [0, 50, 100]}")
        (name, values), = over.items()
        if not values:
            raise ValueError(f"give {name} at least one value")
        if len(set(map(str, values))) != len(values):
            raise ValueError(f"the values of {name} repeat")
        return over

    @field_validator("steps")
    @classmethod
    def _valid_steps(cls, steps: list[dict[str, Any]], info: ValidationInfo) -> list[dict[str, Any]]:
        """Every step, with every value substituted, must be a valid step."""
        if not steps:
            raise ValueError("a sweep needs steps")
        for i, step in enumerate(steps):
            if not isinstance(step, Mapping) or "sweep" in step:
                raise ValueError(f"steps[{i}]: expected a step (send, client, dns, fault, ...; no sweep inside a sweep)")
        over = info.data.get("over")
        if over:
            _expand(over, steps)
        return steps

    @property
    def variable(self) -> str:
        return next(iter(self.over))

    def expanded(self) -> list[Any]:
        """The steps for every value, validated; a client step is labelled with the value."""
        return _expand(self.over, self.steps)


def _expand(over: Mapping[str, list[Any]], steps: list[dict[str, Any]]) -> list[Any]:
    (name, values), = over.items()
    out: list[Any] = []
    for value in values:
        for i, raw in enumerate(steps):
            data = _substitute(raw, name, value)
            if isinstance(data, Mapping) and isinstance(data.get("client"), Mapping):
                data = {**data, "client": {**data["client"], "labels": {
                    **(data["client"].get("labels") or {}), name: value}}}
            try:
                out.append(_STEP_ADAPTER.validate_python(data))
            except ValidationError as exc:
                err = exc.errors()[0]
                loc = [str(p) for p in err["loc"]]
                if loc and loc[0] in STEP_KINDS and loc[1:2] == loc[:1]:
                    loc = loc[1:]  # the union's tag, then the step's own key
                raise ValueError(f"steps[{i}] with {name}={value}: {'.'.join(loc)}: {err['msg']}") from None
    return out


class SweepStep(Strict):
    sweep: SweepSpec


STEP_KINDS["sweep"] = SweepStep
_STEP_ADAPTER: TypeAdapter[Any] = TypeAdapter(Step)

#: A step as written in a scenario: any of the above, or a sweep of them.
ScenarioStep = _step_union(STEP_KINDS)

# --- expectations ----------------------------------------------------------

MessageState = Literal["delivered", "returned", "queued", "bounce-queued", "lost"]


class Expectation(Strict):
    description: str = ""
    #: Only check when these hosts run this software (per-MTA outcomes differ).
    when: dict[Name, list[str]] = Field(default_factory=dict)

    @field_validator("when", mode="before", json_schema_input_type=dict[Name, str | list[str]])
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
    #: Only queries made while this client step ran.
    step: Name | None = None
    count: int | None = Field(None, ge=0)
    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=0)
    #: Every matching query arrived within this many ms of the others (e.g. A and AAAA in parallel).
    within_ms: float | None = Field(None, ge=0)

    @field_validator("type", mode="before", json_schema_input_type=str | list[str] | None)
    @classmethod
    def _listify(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value


class DnsExpect(Expectation):
    dns: DnsQueryCheck


class ClientCheck(Strict):
    """What client steps saw; ``step`` may be a glob (``mac-v6only-*``) narrowed by ``labels``."""

    step: str
    #: Only the matched steps whose labels have one of these values (e.g. ``{delay_ms: [300, 1000]}``).
    labels: dict[str, list[int | float | str]] = Field(default_factory=dict)
    ok: bool | None = None  # the action worked: message accepted, mailbox fetched, connected
    connected: bool | None = None
    family: Literal["ipv4", "ipv6"] | None = None  # of the connection that worked
    #: The server it got to: a lab host's name (any of its addresses) or an address.
    address: str | None = None
    attempts: int | None = Field(None, ge=0)
    min_attempts: int | None = Field(None, ge=0)
    max_attempts: int | None = Field(None, ge=0)
    within_ms: float | None = Field(None, ge=0)  # the whole step, resolving included
    after_ms: float | None = Field(None, ge=0)  # ... took at least this long (it waited)
    #: From the first attempt's start to the start of the one that connected: the
    #: client's own fallback delay (Happy Eyeballs' 200 ms, a sequential client's
    #: timeout), which the machine's load does not stretch the way it does a whole step.
    fallback_within_ms: float | None = Field(None, ge=0)
    fallback_after_ms: float | None = Field(None, ge=0)
    #: The families of the resolver's answer, in order (``[ipv6, ipv4]``; ``[]``: no address).
    resolved: list[Literal["ipv4", "ipv6"]] | None = None
    resolver_error: str | None = None  # e.g. EAI_NONAME
    #: The source address of the connection that worked: one of the client's
    #: planned addresses, or one the lab did not plan (an RFC 4941 temporary address).
    source: Literal["planned", "unplanned"] | None = None

    @field_validator("labels", mode="before", json_schema_input_type=dict[str, int | float | str | list[int | float | str]])
    @classmethod
    def _listify(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: v if isinstance(v, list) else [v] for k, v in value.items()}
        return value


class ClientExpect(Expectation):
    client: ClientCheck


class MailboxCheck(Strict):
    address: str
    count: int | None = Field(None, ge=0)
    dsn_for: Name | None = None
    has_message: Name | None = None
    absent_message: Name | None = None


class MailboxExpect(Expectation):
    mailbox: MailboxCheck


class DsnCheck(Strict):
    """A bounce (an RFC 3464 delivery status notification) for a message, read from a mailbox."""

    #: The message the DSN reports on (a send step's id).
    for_: Name = Field(alias="for")
    #: Only DSNs in this mailbox (default: any mailbox of the lab).
    mailbox: str | None = None
    #: There is such a DSN (false: there is none).
    present: bool = True
    #: A per-recipient block with these fields: Action, Status (5.1.1, or a class: 5, 5.1),
    #: Remote-MTA (a lab host's name or a DNS name), Diagnostic-Code (an RE2 pattern, searched).
    action: Literal["failed", "delayed", "delivered", "relayed", "expanded"] | None = None
    status: Annotated[str, Field(pattern=r"^[245](\.\d{1,3}){0,2}$")] | None = None
    remote_mta: str | None = None
    reporting_mta: str | None = None
    diagnostic: str | None = None

    @field_validator("diagnostic")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _regex(value) if value is not None else value


class DsnExpect(Expectation):
    dsn: DsnCheck


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
        return _regex(value)


class LogExpect(Expectation):
    log: LogCheck


class Share(Strict):
    """A range of percentages, both ends included."""

    min: float = Field(0, ge=0, le=100)
    max: float = Field(100, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Share:
        if self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class DistributionCheck(Strict):
    """Where N connections or messages went, counted per server from the servers' own logs."""

    #: Client steps (a glob over step ids; every run of a repeated step): each run's
    #: connection that worked, counted at the server whose log shows it.
    steps: str | None = None
    #: Or messages (a glob over message names): counted at the first of ``servers`` on each one's path.
    messages: str | None = None
    #: The servers counted; anything else that received one counts as "elsewhere".
    servers: list[Name] = Field(min_length=1)
    #: How many were counted at the servers in all.
    count: int | None = Field(None, ge=0)
    #: Every one went to this server.
    all_to: Name | None = None
    #: Every server got a share in this range (percent of those counted).
    each: Share | None = None
    #: Per server: its share's range.
    share: dict[Name, Share] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> DistributionCheck:
        if (self.steps is None) == (self.messages is None):
            raise ValueError("a distribution counts either client 'steps' or 'messages' (exactly one of them)")
        return self


class DistributionExpect(Expectation):
    distribution: DistributionCheck


EXPECT_KINDS = ("message", "dns", "mailbox", "queue", "log", "client", "distribution", "dsn")

Expect = Annotated[
    Annotated[MessageExpect, Tag("message")]
    | Annotated[DnsExpect, Tag("dns")]
    | Annotated[MailboxExpect, Tag("mailbox")]
    | Annotated[QueueExpect, Tag("queue")]
    | Annotated[LogExpect, Tag("log")]
    | Annotated[ClientExpect, Tag("client")]
    | Annotated[DistributionExpect, Tag("distribution")]
    | Annotated[DsnExpect, Tag("dsn")],
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
    scenario: list[ScenarioStep] = Field(default_factory=list)
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

    def final_mx_hosts(self, domain: str) -> list[str]:
        """The MX hosts that deliver the domain's mail themselves: the mailbox host, and, when the
        domain has a mailstore and no pinned mailbox host, every other MX of the best preference
        (equal-preference MX hosts share the load; each hands its mail to the mailstore over LMTP)."""
        final = self.mailbox_host(domain)
        if final is None:
            return []
        dom = self.domains[domain]
        if dom.mailbox_host or not dom.mailstore:
            return [final]
        best = dom.mx[final]
        return [final] + [mx for mx, pref in dom.mx.items() if pref == best and mx != final]

    def steps(self) -> list[Step]:
        """The scenario as it runs: every sweep expanded into its steps."""
        out: list[Step] = []
        for step in self.scenario:
            out += step.sweep.expanded() if isinstance(step, SweepStep) else [step]
        return out

    def step_origins(self) -> list[tuple[int, ...]]:
        """For each of ``steps()``: where the user wrote it (scenario index, and inside a sweep, its step)."""
        out: list[tuple[int, ...]] = []
        for i, step in enumerate(self.scenario):
            if isinstance(step, SweepStep):
                n = len(step.sweep.steps)
                out += [(i, j % n) for j in range(n * len(step.sweep.over[step.sweep.variable]))]
            else:
                out.append((i,))
        return out

    def messages(self) -> dict[str, SendSpec]:
        return {s.send.id: s.send for s in self.steps() if isinstance(s, SendStep)}

    def client_steps(self) -> dict[str, ClientSpec]:
        return {s.client.id: s.client for s in self.steps() if isinstance(s, ClientStep)}


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
    "LOCAL_PART_RE",
    "DNS_NAME_RE",
    "MAX_DURATION_S",
    "MAX_TTL",
    "SPECIAL_NETWORKS",
    "compile_log_pattern",
    "Duration",
    "Name",
    "Strict",
    "Pools",
    "Timing",
    "Segment",
    "GaiEntry",
    "GaiScopeEntry",
    "GaiConf",
    "RelayFrom",
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
    "ClientAction",
    "ClientProtocol",
    "PROTOCOL_PORTS",
    "RESOLVERS",
    "ClientSpec",
    "ClientStep",
    "FaultSetting",
    "FaultSpec",
    "FaultStep",
    "SweepSpec",
    "SweepStep",
    "ScenarioStep",
    "IMAGE_SUITES",
    "STEP_KINDS",
    "Step",
    "MessageState",
    "Expectation",
    "MessageExpect",
    "DnsQueryCheck",
    "DnsExpect",
    "ClientCheck",
    "ClientExpect",
    "MailboxCheck",
    "MailboxExpect",
    "QueueCheck",
    "QueueExpect",
    "LogCheck",
    "LogExpect",
    "EXPECT_KINDS",
    "topology_json_schema",
    "DistributionCheck",
    "DistributionExpect",
    "DsnCheck",
    "DsnExpect",
    "Expect",
    "Variant",
    "Topology",
]


def topology_json_schema() -> dict[str, Any]:
    """The topology file's JSON Schema (draft 2020-12), for editors (yaml-language-server) and CI linters.

    It checks each key and type; what needs the whole file (names that must
    exist, families, reachability) is for ``testbed validate``.
    """
    schema = Topology.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "testbed topology",
        "description": "A lab of the IPv4/IPv6 mail testbed: segments, hosts, domains, DNS, scenario, "
                       "expectations, variants (docs/topology.md). `testbed validate` checks the rest.",
        **{k: v for k, v in schema.items() if k != "title"},
    }
