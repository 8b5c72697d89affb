"""The topology model: load a YAML file, apply a variant and overrides, validate.

Validation has two layers, both collected before anything is reported:
the schema (pydantic: types, unknown keys, ranges) and the cross-references
(a host on an unknown segment, a dual-stack host on an IPv6-only segment, an
expectation about a message no step sends). Each problem names the file, the
path inside it and what was expected.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
)

from . import adapters
from .errors import Problem, TopologyError
from .source import SourceDoc, load_yaml

Family = Literal["ipv4", "ipv6", "dual"]
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


# --- loading -----------------------------------------------------------------


def deep_merge(base: Any, patch: Any) -> Any:
    """Mappings merge key by key; anything else in the patch replaces the base."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = deep_merge(base.get(key), value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(patch)


def set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested mappings, creating mappings as needed."""
    keys = dotted.split(".")
    if not all(keys):
        raise ValueError(f"bad path {dotted!r}")
    node = data
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            node[key] = {}
        node = node[key]
    node[keys[-1]] = value


# Pydantic puts the union branch's tag into error locations; the tag is also
# the real key ("send"), so a repeated pair (send.send) is collapsed to one.
_UNION_TAGS = set(STEP_KINDS) | set(EXPECT_KINDS)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic inserts after ``scenario[i]`` / ``expect[i]``."""
    if len(loc) >= 3 and loc[0] in ("scenario", "expect") and isinstance(loc[1], int) and loc[2] in _UNION_TAGS:
        return loc[:2] + loc[3:]
    return loc


def _schema_problems(doc: SourceDoc, exc: ValidationError, variant: str) -> list[Problem]:
    problems = []
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        problems.append(doc.problem(loc, msg, variant))
    return problems


def mta_host_names(data: Mapping[str, Any]) -> list[str]:
    """The MTA hosts of a topology document, before validation (for --mta and the matrix)."""
    hosts = data.get("hosts") or {}
    return sorted(n for n, h in hosts.items() if isinstance(h, Mapping) and h.get("kind") == "mta")


def software_everywhere(data: Mapping[str, Any], software: str) -> dict[str, str]:
    """Overrides that put `software` on every MTA host of a topology document."""
    return {f"hosts.{name}.software": software for name in mta_host_names(data)}


def variant_names(data: Mapping[str, Any]) -> list[str]:
    base = data.get("base_variant", "default")
    variants = data.get("variants") or {}
    names = [str(base)]
    if isinstance(variants, Mapping):
        names += [str(v) for v in variants if str(v) != str(base)]
    return names


def load_topology(
    path: Path | str,
    variant: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Topology:
    """Load, patch and validate one variant of a topology file.

    ``overrides`` are dotted paths (``hosts.relay.software``) set after the
    variant's patch, as the CLI's ``--set`` and ``--mta`` do.
    """
    doc = load_yaml(Path(path))
    return topology_from_doc(doc, variant, overrides)


def topology_from_doc(
    doc: SourceDoc, variant: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Topology:
    data = copy.deepcopy(doc.data)
    names = variant_names(data)
    chosen = variant or names[0]
    if chosen not in names:
        raise TopologyError([doc.problem(("variants",), f"no variant {chosen!r}; this file has: {', '.join(names)}")])
    if chosen != names[0]:
        patch = (data.get("variants") or {}).get(chosen) or {}
        if isinstance(patch, Mapping) and isinstance(patch.get("patch"), Mapping):
            data = deep_merge(data, patch["patch"])
    for dotted, value in (overrides or {}).items():
        try:
            set_path(data, dotted, value)
        except ValueError as exc:
            raise TopologyError([Problem("--set", dotted, str(exc))]) from None
    data["variant"] = chosen
    label = chosen if chosen != names[0] else ""
    problems: list[Problem] = []
    dropped: set[Loc] = set()
    for _ in range(5):
        try:
            topo = Topology.model_validate(data)
            break
        except ValidationError as exc:
            problems += _schema_problems(doc, exc, label)
            # Set the broken entries aside and validate the rest again, so the
            # cross-reference problems are reported in the same round.
            if not _drop_invalid(data, exc, dropped):
                raise TopologyError(problems) from None
    else:
        raise TopologyError(problems)
    for loc, message in check_references(topo):
        if not any(loc[: len(d)] == d for d in dropped) and not _mentions(message, dropped):
            problems.append(doc.problem(loc, message, label))
    if problems:
        raise TopologyError(problems)
    return topo


_COLLECTIONS = ("segments", "hosts", "domains", "variants")
# Valid stand-ins that keep the indexes of later list entries unchanged.
_PLACEHOLDERS = {"scenario": {"settle": {}}, "expect": {"log": {"host": "placeholder", "pattern": ""}}}
_REQUIRED_TOP = {"name": "placeholder", "segments": {}, "hosts": {}}


def _drop_invalid(data: dict[str, Any], exc: ValidationError, dropped: set[Loc]) -> bool:
    """Set aside each entry that failed the schema; False if nothing could be."""
    changed = False
    for err in exc.errors():
        loc = _clean_loc(tuple(err["loc"]))
        if not loc:
            continue
        top = loc[0]
        if len(loc) >= 2 and top in _COLLECTIONS and isinstance(data.get(top), dict):
            if data[top].pop(loc[1], None) is not None:
                changed = True
            dropped.add(loc[:2])
        elif len(loc) >= 2 and top in _PLACEHOLDERS and isinstance(loc[1], int):
            seq = data.get(top)
            if isinstance(seq, list) and loc[1] < len(seq) and seq[loc[1]] != _PLACEHOLDERS[top]:
                seq[loc[1]] = copy.deepcopy(_PLACEHOLDERS[top])
                changed = True
            dropped.add(loc[:2])
        elif top in data:
            if top in _REQUIRED_TOP:
                data[top] = copy.deepcopy(_REQUIRED_TOP[top])
            else:
                del data[top]
            dropped.add(loc[:1])
            changed = True
    return changed


def _mentions(message: str, dropped: set[Loc]) -> bool:
    """A reference to an entry set aside is a consequence, not a new problem."""
    if message.startswith("no step sends") and any(d[0] == "scenario" for d in dropped):
        return True
    return any(len(d) == 2 and isinstance(d[1], str) and repr(d[1]) in message for d in dropped)


def validate_file(path: Path | str) -> list[str]:
    """Validate every variant; return their names or raise with all problems."""
    doc = load_yaml(Path(path))
    problems: list[Problem] = []
    seen: set[tuple[str, str, int | None]] = set()
    names = variant_names(doc.data)
    for name in names:
        try:
            topology_from_doc(doc, name)
        except TopologyError as exc:
            # A problem of the file as written shows up again in every variant.
            for problem in exc.problems:
                key = (problem.path, problem.message, problem.line)
                if key not in seen:
                    seen.add(key)
                    problems.append(problem)
    if problems:
        raise TopologyError(problems)
    return names


# --- cross-reference checks ------------------------------------------------

Loc = tuple[str | int, ...]


def check_references(top: Topology) -> list[tuple[Loc, str]]:
    """Everything the schema cannot see: names, families, reachability."""
    out: list[tuple[Loc, str]] = []
    out += _check_hosts(top)
    out += _check_domains(top)
    out += _check_dns(top)
    out += _check_dns_rules(top)
    out += _check_scenario(top)
    out += _check_expectations(top)
    return out


def _one_of(names: Iterable[str]) -> str:
    names = sorted(names)
    return "one of: " + ", ".join(names) if names else "one, but the topology defines none"


FAMILIES_OF = {"ipv4": {"ipv4"}, "ipv6": {"ipv6"}, "dual": {"ipv4", "ipv6"}}


def _check_hosts(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    used_ids: dict[tuple[str, int], str] = {}
    for name, host in top.hosts.items():
        loc: Loc = ("hosts", name)
        allowed = SOFTWARE[host.kind]
        if host.software and host.software not in allowed:
            out.append((loc + ("software",), f"{host.kind} hosts run {_one_of(allowed)}"))
        if host.kind == "router":
            if host.segment:
                out.append((loc + ("segment",), "a router lists its networks under 'segments'"))
            segs = host.segments or []
            if len(segs) < 2:
                out.append((loc + ("segments",), "a router joins at least two segments"))
            for i, seg in enumerate(segs):
                if seg not in top.segments:
                    out.append((loc + ("segments", i), f"unknown segment {seg!r}, expected {_one_of(top.segments)}"))
            if host.stack and host.stack != "dual":
                out.append((loc + ("stack",), "routers forward both families; leave 'stack' out"))
            member_segments = segs
        else:
            if host.segments:
                out.append((loc + ("segments",), "only routers join several segments; use 'segment'"))
            if not host.segment:
                out.append((loc + ("segment",), "required key is missing"))
                continue
            if host.segment not in top.segments:
                out.append((loc + ("segment",), f"unknown segment {host.segment!r}, expected {_one_of(top.segments)}"))
                continue
            family = top.segments[host.segment].family
            stack = top.host_stack(name)
            if not FAMILIES_OF[stack] <= FAMILIES_OF[family]:
                out.append((loc + ("stack",), f"a {stack} host cannot sit on the {family} segment {host.segment!r}"))
            member_segments = [host.segment]
        if host.id is not None:
            for seg in member_segments:
                other = used_ids.get((seg, host.id))
                if other:
                    out.append((loc + ("id",), f"id {host.id} is already used by {other} on segment {seg}"))
                used_ids[(seg, host.id)] = name
    fqdns: dict[str, str] = {}
    for name in top.hosts:
        fqdn = top.fqdn_of(name)
        if fqdn in fqdns:
            out.append((("hosts", name, "fqdn"), f"{fqdn} is already the name of {fqdns[fqdn]}"))
        fqdns[fqdn] = name
    for seg_name, seg in top.segments.items():
        if seg.subnet_v4 and seg.family == "ipv6":
            pass  # allowed: engines without IPv6-only networks need a placeholder IPv4 subnet
        if seg.subnet_v6 and seg.family == "ipv4":
            out.append((("segments", seg_name, "subnet_v6"), "an ipv4 segment has no IPv6 subnet"))
    return out


def _check_domains(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    stores = set(top.hosts_of_kind("mailstore"))
    mtas = set(top.hosts_of_kind("mta"))
    for dname, dom in top.domains.items():
        loc: Loc = ("domains", dname)
        if not FQDN_RE.match(dname):
            out.append((loc, "expected a domain name such as example.net"))
        for host in dom.mx:
            if host not in mtas:
                out.append((loc + ("mx", host), f"MX hosts must be mta hosts, expected {_one_of(mtas)}"))
        if dom.relay and dom.relay not in mtas:
            out.append((loc + ("relay",), f"unknown mta host {dom.relay!r}, expected {_one_of(mtas)}"))
        if dom.mailbox_host and dom.mailbox_host not in mtas:
            out.append((loc + ("mailbox_host",), f"expected an mta host, {_one_of(mtas)}"))
        if dom.mailboxes and not dom.mx and not dom.mailbox_host:
            out.append((loc + ("mx",), "a domain with mailboxes needs an MX host"))
        if dom.mailstore and dom.mailstore not in stores:
            out.append((loc + ("mailstore",), f"expected a mailstore host, {_one_of(stores)}"))
        final = top.mailbox_host(dname)
        if dom.mailboxes and not dom.mailstore and final in mtas and top.software_of(final) not in SELF_STORING:
            out.append((
                loc + ("mailstore",),
                f"{final} runs {top.software_of(final)}, which delivers only to a mailstore: "
                f"add a Dovecot host and name it here, {_one_of(stores)}",
            ))
    return out


def _check_dns(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    servers = top.hosts_of_kind("dns")
    server = top.dns_server()
    if top.dns.server and top.dns.server not in servers:
        out.append((("dns", "server"), f"expected a dns host, {_one_of(servers)}"))
        return out
    if server is None:
        if not servers:
            out.append((("hosts",), "the lab needs one host of kind dns"))
        else:
            out.append((("dns", "server"), f"several dns hosts; name the lab's server, {_one_of(servers)}"))
        return out
    reach = reachable_segments(top)
    server_seg = top.hosts[server].segment
    server_families = FAMILIES_OF[top.host_stack(server)]
    for name, host in top.hosts.items():
        if host.kind == "router" or name == server or host.segment not in top.segments:
            continue
        families = FAMILIES_OF[top.host_stack(name)] & server_families
        if not any(server_seg in reach[f].get(host.segment, set()) for f in families):
            out.append(
                (("hosts", name), f"cannot reach the DNS server {server} over any of its address families")
            )
    return out


def _check_dns_rules(top: Topology) -> list[tuple[Loc, str]]:
    """Rules are checked by the DNS server's own parser, so the file fails as the server would."""
    from .dnsserver.rules import parse_rules

    lists: list[tuple[Loc, list[dict[str, Any]]]] = [(("dns", "rules"), top.dns.rules)]
    for i, step in enumerate(top.scenario):
        if isinstance(step, DnsStep):
            for key in ("set", "add"):
                rules = getattr(step.dns, key)
                if rules is not None:
                    lists.append((("scenario", i, "dns", key), rules))
    out: list[tuple[Loc, str]] = []
    for loc, rules in lists:
        _, errors = parse_rules([_client_names_as_family(r, top) for r in rules], path="")
        for err in errors:
            out.append((loc + _parse_rule_path(err.path), err.message))
    return out


def _client_names_as_family(rule: Any, top: Topology) -> Any:
    """A lab host name is a valid rule client (the planner turns it into addresses)."""
    if not isinstance(rule, dict) or not isinstance(rule.get("match"), dict) or "client" not in rule["match"]:
        return rule
    clients = rule["match"]["client"]
    items = clients if isinstance(clients, list) else [clients]
    items = ["ipv4" if isinstance(c, str) and c in top.hosts else c for c in items]
    return {**rule, "match": {**rule["match"], "client": items}}


def _parse_rule_path(path: str) -> Loc:
    """'[2].match.client' -> (2, 'match', 'client')."""
    loc: list[str | int] = []
    for part in re.findall(r"\[(\d+)\]|([^.\[\]]+)", path):
        loc.append(int(part[0]) if part[0] else part[1])
    return tuple(loc)


def reachable_segments(top: Topology) -> dict[str, dict[str, set[str]]]:
    """Per family: segment -> segments reachable through routers carrying that family."""
    result: dict[str, dict[str, set[str]]] = {}
    for family in ("ipv4", "ipv6"):
        carries = {s for s, seg in top.segments.items() if family in FAMILIES_OF[seg.family]}
        links: dict[str, set[str]] = {s: set() for s in carries}
        for host in top.hosts.values():
            if host.kind != "router":
                continue
            joined = [s for s in host.segments or [] if s in carries]
            for a in joined:
                links[a].update(joined)
        reach: dict[str, set[str]] = {}
        for start in carries:
            seen = {start}
            todo = [start]
            while todo:
                for nxt in links[todo.pop()]:
                    if nxt not in seen:
                        seen.add(nxt)
                        todo.append(nxt)
            reach[start] = seen
        result[family] = reach
    return result


def _check_scenario(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    mtas = set(top.hosts_of_kind("mta"))
    clients = set(top.hosts_of_kind("client"))
    seen_ids: set[str] = set()
    for i, step in enumerate(top.scenario):
        loc: Loc = ("scenario", i)
        if isinstance(step, SendStep):
            spec = step.send
            if spec.id in seen_ids:
                out.append((loc + ("send", "id"), f"message id {spec.id!r} is used twice"))
            seen_ids.add(spec.id)
            if spec.via not in mtas:
                out.append((loc + ("send", "via"), f"expected an mta host, {_one_of(mtas)}"))
            if spec.client is None and len(clients) != 1:
                out.append((loc + ("send", "client"), f"name the sending client, {_one_of(clients)}"))
            elif spec.client is not None and spec.client not in clients:
                out.append((loc + ("send", "client"), f"expected a client host, {_one_of(clients)}"))
        elif isinstance(step, StopStep | StartStep):
            host = step.stop if isinstance(step, StopStep) else step.start
            key = "stop" if isinstance(step, StopStep) else "start"
            if host not in top.hosts:
                out.append((loc + (key,), f"unknown host {host!r}, expected {_one_of(top.hosts)}"))
        elif isinstance(step, StopServiceStep | StartServiceStep):
            key = "stop_service" if isinstance(step, StopServiceStep) else "start_service"
            host = getattr(step, key)
            services = {n for n, h in top.hosts.items() if h.kind in ("mta", "mailstore", "dns")}
            if host not in services:
                out.append((loc + (key,), f"expected a host with a service, {_one_of(services)}"))
        elif isinstance(step, FlushStep) and step.flush != "all":
            for j, host in enumerate(step.flush):
                if host not in mtas:
                    out.append((loc + ("flush", j), f"expected an mta host, {_one_of(mtas)}"))
    return out


def _check_expectations(top: Topology) -> list[tuple[Loc, str]]:
    out: list[tuple[Loc, str]] = []
    messages = set(top.messages())
    hosts = set(top.hosts)
    for i, exp in enumerate(top.expect):
        loc: Loc = ("expect", i)
        for host in exp.when:
            if host not in hosts:
                out.append((loc + ("when", host), f"unknown host, expected {_one_of(hosts)}"))
        refs: list[tuple[Loc, str | None]] = []
        hostrefs: list[tuple[Loc, str | None]] = []
        if isinstance(exp, MessageExpect):
            refs.append((loc + ("message",), exp.message))
            hostrefs += [(loc + ("path", j), h) for j, h in enumerate(exp.path or [])]
            hostrefs += [(loc + ("queued_at", j), h) for j, h in enumerate(exp.queued_at or [])]
            hostrefs.append((loc + ("dsn_generated_at",), exp.dsn_generated_at))
        elif isinstance(exp, MailboxExpect):
            refs += [(loc + ("mailbox", k), getattr(exp.mailbox, k)) for k in ("dsn_for", "has_message", "absent_message")]
            address = exp.mailbox.address
            local, _, domain = address.partition("@")
            if domain not in top.domains or local not in top.domains[domain].mailboxes:
                out.append((loc + ("mailbox", "address"), f"{address} is not a mailbox of the topology's domains"))
        elif isinstance(exp, QueueExpect):
            hostrefs.append((loc + ("queue", "host"), exp.queue.host))
            refs.append((loc + ("queue", "message"), exp.queue.message))
        elif isinstance(exp, LogExpect):
            hostrefs.append((loc + ("log", "host"), exp.log.host))
        elif isinstance(exp, DnsExpect):
            hostrefs.append((loc + ("dns", "client"), exp.dns.client))
        for where, ref in refs:
            if ref is not None and ref not in messages:
                out.append((where, f"no step sends a message {ref!r}; expected {_one_of(messages)}"))
        for where, ref in hostrefs:
            if ref is not None and ref not in hosts:
                out.append((where, f"unknown host {ref!r}, expected {_one_of(hosts)}"))
    return out
