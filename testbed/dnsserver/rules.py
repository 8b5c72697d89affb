"""Behaviour rules: the fault language of the lab DNS server.

A rule is ``match`` (which queries) plus ``action`` (what to do to the
answer). Rules are checked in order and the first that matches decides the
answer; a query no rule matches is answered from the zones. Counters
(``match.count``) are independent of order: every rule counts each query that
meets its other conditions, whether or not an earlier rule won it, so
"the first AAAA query for X" means exactly that.

Rules come from plain dicts (YAML/JSON), are validated with every problem
reported as a :class:`RuleError`, and are immutable once built except for
their counters, which sit behind a lock.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE

from .errors import Problem, join
from .names import name_problem, normalise
from .presets import PRESETS

RCODES = ("SERVFAIL", "REFUSED", "NXDOMAIN", "NODATA", "FORMERR", "NOTIMP")
ORDERS = ("fixed", "rotate")
TRANSPORTS = ("udp", "tcp")
FAMILIES = ("ipv4", "ipv6")
COUNT_PER = ("client", "name", "type")
MAX_DELAY_MS = 60_000
# Bounded so a flood of distinct clients/names cannot grow memory forever.
MAX_COUNTER_KEYS = 100_000

_RULE_KEYS = {"name", "match", "action"}
# Informational keys added by ``list``; accepted (and ignored) so the output of
# list can be fed back to set.
_LIST_KEYS = {"hits", "from_preset"}
_PRESET_KEYS = {"preset", "name", "match"}
_MATCH_KEYS = {"name", "type", "client", "transport", "count"}
_ACTION_KEYS = {"delay_ms", "drop", "rcode", "truncate", "order", "ttl"}
_COUNT_KEYS = {"first", "after", "per"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,62}$")


class RuleError(Problem):
    """One problem in a rule, e.g. ``rules[2].match.client: 'x' is not ...``."""


# ---------------------------------------------------------------------------
# model

@dataclass(frozen=True)
class Query:
    """The facts a rule can match on, for one received question."""

    name: str              # lower-case, absolute
    qtype: str             # "A", "AAAA", "TYPE65280", ...
    client: str            # plain IPv4 for v4-mapped clients
    family: str            # "ipv4" | "ipv6"
    transport: str         # "udp" | "tcp"


@dataclass(frozen=True)
class Count:
    first: int | None = None   # match this many (after skipping ``after``)
    after: int = 0             # skip this many first
    per: tuple[str, ...] = ()  # separate counters per client / name / type

    def accepts(self, n: int) -> bool:
        """n is the 1-based number of this query among those counted."""
        return n > self.after and (self.first is None or n <= self.after + self.first)


@dataclass(frozen=True)
class Match:
    names: tuple[str, ...] = ()           # exact names or glob patterns, normalised
    types: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()         # as written, for listing
    transport: str | None = None
    count: Count | None = None
    _patterns: tuple[re.Pattern[str], ...] = field(default=(), repr=False, compare=False)
    _exact: frozenset[str] = field(default=frozenset(), repr=False, compare=False)
    _nets: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default=(), repr=False, compare=False)
    _families: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def matches(self, q: Query) -> bool:
        if self.names and q.name not in self._exact and not any(p.match(q.name) for p in self._patterns):
            return False
        if self.types and q.qtype not in self.types:
            return False
        if self.transport and q.transport != self.transport:
            return False
        if self.clients:
            if q.family not in self._families:
                try:
                    ip = ipaddress.ip_address(q.client)
                except ValueError:
                    return False
                if not any(ip in net for net in self._nets if net.version == ip.version):
                    return False
        return True


@dataclass(frozen=True)
class Action:
    delay_ms: float = 0.0
    drop: bool = False
    rcode: str | None = None              # one of RCODES
    truncate: bool = False
    order: str = "fixed"
    ttl: int | None = None


@dataclass
class Rule:
    name: str
    match: Match
    action: Action
    source: dict[str, Any]                # canonical dict form, for listing
    preset: str | None = None             # preset it was expanded from
    hits: int = 0                         # queries this rule decided
    _counts: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)
    _rotation: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count_accepts(self, q: Query) -> bool:
        """Count this query (it met the other conditions) and say if ``count`` allows it."""
        count = self.match.count
        if count is None:
            return True
        key = tuple(getattr(q, "qtype" if k == "type" else k) for k in count.per)
        with self._lock:
            if key not in self._counts and len(self._counts) >= MAX_COUNTER_KEYS:
                self._counts.clear()
            n = self._counts.get(key, 0) + 1
            self._counts[key] = n
        return count.accepts(n)

    def next_rotation(self, name: str, qtype: str) -> int:
        """How far to rotate this RRset for this query (round robin per name and type)."""
        with self._lock:
            key = (name, qtype)
            n = self._rotation.get(key, 0)
            if key not in self._rotation and len(self._rotation) >= MAX_COUNTER_KEYS:
                self._rotation.clear()
            self._rotation[key] = n + 1
        return n

    def record_hit(self) -> None:
        with self._lock:
            self.hits += 1

    def describe(self) -> dict[str, Any]:
        d = dict(self.source)
        if self.preset:
            d["from_preset"] = self.preset
        d["hits"] = self.hits
        return d


class RuleBook:
    """An ordered, immutable list of rules; swapped whole when rules change."""

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules: tuple[Rule, ...] = tuple(rules)
        # Rules after the winner still have to see the query if they count.
        self._counting = any(r.match.count for r in self.rules)

    def __len__(self) -> int:
        return len(self.rules)

    def decide(self, q: Query) -> Rule | None:
        winner: Rule | None = None
        for rule in self.rules:
            if winner is not None and rule.match.count is None:
                continue
            if not rule.match.matches(q):
                continue
            if rule.count_accepts(q) and winner is None:
                winner = rule
                if not self._counting:
                    break
        if winner is not None:
            winner.record_hit()
        return winner

    def names(self) -> list[str]:
        return [r.name for r in self.rules]


# ---------------------------------------------------------------------------
# parsing

def parse_rules(raw: Any, path: str = "rules", *, start: int = 0,
                taken: Iterable[str] = ()) -> tuple[list[Rule], list[RuleError]]:
    """Parse a list of rule/preset dicts; return the rules and *all* problems.

    ``start`` numbers default names after existing rules (``rule-<n>``) and
    ``taken`` holds names already in use (when adding to active rules).
    """
    errors: list[RuleError] = []
    if isinstance(raw, dict) and set(raw) == {"rules"}:
        raw = raw["rules"]
    if not isinstance(raw, list):
        return [], [RuleError(path, f"must be a list of rules, got {type(raw).__name__}")]
    used = _Names()
    for n in taken:
        used[n] = "an active rule"
    rules: list[Rule] = []
    for i, item in enumerate(raw):
        ipath = join(path, i)
        if isinstance(item, dict) and "preset" in item:
            new = _parse_preset(item, ipath, start + len(rules), errors, used)
        else:
            one = _parse_rule(item, ipath, start + len(rules), errors, used=used)
            new = [one] if one else []
        for rule in new:
            if rule.name in used:
                errors.append(RuleError(join(ipath, "name"),
                                        f"name {rule.name!r} is already used by {used[rule.name]}"))
            used[rule.name] = ipath
        rules.extend(new)
    return (rules if not errors else []), errors


class _Names(dict[str, str]):
    """Rule names in use (name -> where), plus the 'x' of every preset name 'x/a', for constant-time lookups."""

    def __init__(self) -> None:
        super().__init__()
        self.prefixes: set[str] = set()
        #: Per default name, the suffix to try next (so 20,000 presets are not numbered in quadratic time).
        self.next_suffix: dict[str, int] = {}

    def __setitem__(self, name: str, where: str) -> None:
        super().__setitem__(name, where)
        parts = name.split("/")
        self.prefixes.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def taken(self, name: str) -> bool:
        return name in self or name in self.prefixes


def _parse_rule(raw: Any, path: str, position: int, errors: list[RuleError],
                preset: str | None = None, used: _Names | None = None) -> Rule | None:
    if not isinstance(raw, dict):
        errors.append(RuleError(path, "must be a mapping with match and action (or a preset)"))
        return None
    before = len(errors)
    _unknown(raw, _RULE_KEYS | _LIST_KEYS, path, errors, hint="a preset needs 'preset: NAME'")
    name = _parse_name(raw.get("name"), join(path, "name"), errors,
                       lambda: _free_name(f"rule-{position + 1}", used if used is not None else _Names()))
    match = _parse_match(raw.get("match", {}), join(path, "match"), errors)
    if "action" not in raw:
        errors.append(RuleError(join(path, "action"), "is missing (what should the rule do?)"))
        action = None
    else:
        action = _parse_action(raw["action"], join(path, "action"), errors)
    if len(errors) > before or match is None or action is None:
        return None
    if preset is None and isinstance(raw.get("from_preset"), str):
        preset = raw["from_preset"]
    source = {"name": name, "match": _match_dict(match), "action": _action_dict(action)}
    return Rule(name=name, match=match, action=action, source=source, preset=preset)


def _parse_preset(raw: dict[str, Any], path: str, position: int,
                  errors: list[RuleError], used: _Names) -> list[Rule]:
    pname = raw.get("preset")
    preset = PRESETS.get(pname) if isinstance(pname, str) else None
    if preset is None:
        errors.append(RuleError(join(path, "preset"),
                                f"unknown preset {pname!r} (known: {', '.join(PRESETS)})"))
        return []
    before = len(errors)
    _unknown(raw, _PRESET_KEYS | set(preset.params), path, errors,
             hint=f"preset {preset.name} takes {', '.join(preset.params) or 'no parameters'}")
    name = _parse_name(raw.get("name"), join(path, "name"), errors,
                       lambda: _free_name(preset.name, used))
    match = raw.get("match", {})
    if not isinstance(match, dict):
        errors.append(RuleError(join(path, "match"), "must be a mapping"))
        return []
    if preset.sets_type and "type" in match:
        errors.append(RuleError(join(path, "match.type"),
                                f"preset {preset.name} sets the query type itself; remove it"))
    params = {}
    for key, default in preset.params.items():
        value = raw.get(key, default)
        if key == "delay_ms":
            value = _parse_delay(value, join(path, key), errors)
        params[key] = value
    if len(errors) > before:
        return []
    rules: list[Rule] = []
    found: list[RuleError] = []
    for j, rdict in enumerate(preset.expand(name, match, params)):
        # Problems inside an expansion can only come from the user's match,
        # so they are reported at the preset entry's own path, once.
        rule = _parse_rule(rdict, path, position + j, found, preset=preset.name)
        if rule:
            rules.append(rule)
    errors.extend(dict.fromkeys(found))
    return rules if not found else []


def _parse_name(raw: Any, path: str, errors: list[RuleError], default: Callable[[], str]) -> str:
    if raw is None:
        return default()
    if not isinstance(raw, str) or not _NAME_RE.fullmatch(raw):
        errors.append(RuleError(path, f"{raw!r} is not a valid rule name (letters, digits, "
                                      "'-', '_', '.', '/', up to 63 characters)"))
        return default()
    return raw


def _free_name(base: str, used: _Names) -> str:
    """A default name not yet taken (nor as the prefix of a preset's 'x/a' names)."""
    if not used.taken(base):
        return base
    k = used.next_suffix.get(base, 2)
    while used.taken(f"{base}-{k}"):
        k += 1
    used.next_suffix[base] = k + 1
    return f"{base}-{k}"


def _as_list(raw: Any) -> list[Any]:
    return raw if isinstance(raw, list) else [raw]


def _parse_match(raw: Any, path: str, errors: list[RuleError]) -> Match | None:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        errors.append(RuleError(path, "must be a mapping (name, type, client, transport, count)"))
        return None
    before = len(errors)
    _unknown(raw, _MATCH_KEYS, path, errors)
    names, exact, patterns = [], set(), []
    for i, n in enumerate(_as_list(raw.get("name", []))):
        npath = join(path, "name") + (f"[{i}]" if isinstance(raw.get("name"), list) else "")
        if not isinstance(n, str) or not n.strip():
            errors.append(RuleError(npath, f"{n!r} is not a name or pattern"))
            continue
        norm = normalise(n)
        if any(c in norm for c in "*?["):
            check = re.sub(r"\[[^\]]*\]", "x", norm).replace("*", "x").replace("?", "x")
            if name_problem(check):
                errors.append(RuleError(npath, f"{n!r} is not a valid name pattern"))
                continue
            patterns.append(re.compile(fnmatch.translate(norm)))
        else:
            err = name_problem(norm)
            if err:
                errors.append(RuleError(npath, err))
                continue
            exact.add(norm)
        names.append(norm)
    types = []
    for i, t in enumerate(_as_list(raw.get("type", []))):
        tpath = join(path, "type") + (f"[{i}]" if isinstance(raw.get("type"), list) else "")
        tname = t.upper() if isinstance(t, str) else t
        if not isinstance(tname, str) or not (tname in QTYPE.reverse or re.fullmatch(r"TYPE\d{1,5}", tname)):
            errors.append(RuleError(tpath, f"{t!r} is not a DNS query type (A, AAAA, MX, ...)"))
            continue
        types.append(tname)
    clients, nets, fams = [], [], set()
    for i, c in enumerate(_as_list(raw.get("client", []))):
        cpath = join(path, "client") + (f"[{i}]" if isinstance(raw.get("client"), list) else "")
        if isinstance(c, str) and c.lower() in FAMILIES:
            fams.add(c.lower())
            clients.append(c.lower())
            continue
        if not isinstance(c, str):
            errors.append(RuleError(cpath, f"{c!r} is not an address, a prefix, ipv4 or ipv6"))
            continue
        try:
            net = ipaddress.ip_network(c)
        except ValueError as e:
            if "host bits" in str(e):
                msg = f"{c!r} has host bits set (did you mean {ipaddress.ip_network(c, strict=False)}?)"
            else:
                msg = f"{c!r} is not an address, a prefix, ipv4 or ipv6"
            errors.append(RuleError(cpath, msg))
            continue
        if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped:
            # Mapped clients are matched as plain IPv4; say so rather than never match.
            errors.append(RuleError(cpath, f"{c!r} is IPv4-mapped; write the IPv4 form"))
            continue
        nets.append(net)
        clients.append(str(net) if net.num_addresses > 1 else str(net.network_address))
    transport = raw.get("transport")
    if transport is not None and transport not in TRANSPORTS:
        errors.append(RuleError(join(path, "transport"), f"{transport!r} must be udp or tcp"))
    count = _parse_count(raw["count"], join(path, "count"), errors) if "count" in raw else None
    if len(errors) > before:
        return None
    return Match(names=tuple(names), types=tuple(types), clients=tuple(clients),
                 transport=transport, count=count, _patterns=tuple(patterns),
                 _exact=frozenset(exact), _nets=tuple(nets), _families=frozenset(fams))


def _parse_count(raw: Any, path: str, errors: list[RuleError]) -> Count | None:
    if not isinstance(raw, dict) or not raw:
        errors.append(RuleError(path, "must be a mapping like {first: 1} or {after: 2}"))
        return None
    _unknown(raw, _COUNT_KEYS, path, errors)
    first = raw.get("first")
    after = raw.get("after", 0)
    ok = True
    if first is not None and not _is_int(first, 1):
        errors.append(RuleError(join(path, "first"), f"must be an integer >= 1, got {first!r}"))
        ok = False
    if not _is_int(after, 0):
        errors.append(RuleError(join(path, "after"), f"must be an integer >= 0, got {after!r}"))
        ok = False
    per = _as_list(raw.get("per", []))
    for p in per:
        if p not in COUNT_PER:
            errors.append(RuleError(join(path, "per"), f"{p!r} must be one of {', '.join(COUNT_PER)}"))
            ok = False
    if ok and first is None and after == 0:
        errors.append(RuleError(path, "needs first and/or after"))
        ok = False
    return Count(first=first, after=after, per=tuple(per)) if ok else None


def _is_int(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _parse_delay(v: Any, path: str, errors: list[RuleError]) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= MAX_DELAY_MS:
        errors.append(RuleError(path, f"must be a number of milliseconds from 0 to {MAX_DELAY_MS}, got {v!r}"))
        return 0.0
    return float(v)


def _parse_action(raw: Any, path: str, errors: list[RuleError]) -> Action | None:
    if not isinstance(raw, dict) or not raw:
        errors.append(RuleError(path, "must be a mapping with at least one of "
                                      + ", ".join(sorted(_ACTION_KEYS))))
        return None
    before = len(errors)
    _unknown(raw, _ACTION_KEYS, path, errors)
    delay = _parse_delay(raw["delay_ms"], join(path, "delay_ms"), errors) if "delay_ms" in raw else 0.0
    for flag in ("drop", "truncate"):
        if flag in raw and not isinstance(raw[flag], bool):
            errors.append(RuleError(join(path, flag), f"must be true or false, got {raw[flag]!r}"))
    rcode = raw.get("rcode")
    if rcode is not None:
        rcode = rcode.upper() if isinstance(rcode, str) else rcode
        if rcode not in RCODES:
            errors.append(RuleError(join(path, "rcode"), f"{raw['rcode']!r} must be one of {', '.join(RCODES)}"))
    order = raw.get("order", "fixed")
    if order not in ORDERS:
        errors.append(RuleError(join(path, "order"), f"{order!r} must be fixed or rotate"))
    ttl = raw.get("ttl")
    if ttl is not None and not (_is_int(ttl, 0) and ttl < 2**31):
        errors.append(RuleError(join(path, "ttl"), f"must be an integer number of seconds, got {ttl!r}"))
    drop, truncate = raw.get("drop") is True, raw.get("truncate") is True
    # Combinations that cannot do what they say are errors, not silent no-ops.
    if drop and len([k for k in raw if k != "drop"]):
        others = ", ".join(sorted(k for k in raw if k != "drop"))
        errors.append(RuleError(path, f"drop sends nothing, so {others} would have no effect"))
    if rcode and truncate:
        errors.append(RuleError(path, "rcode and truncate exclude each other (use two rules "
                                      "with transport udp / tcp)"))
    if rcode and ("order" in raw or ttl is not None):
        errors.append(RuleError(path, f"rcode {rcode} sends no answers, so order/ttl would have no effect"))
    if len(errors) > before:
        return None
    return Action(delay_ms=delay, drop=drop, rcode=rcode, truncate=truncate, order=order, ttl=ttl)


def _unknown(raw: dict[str, Any], allowed: set[str], path: str, errors: list[RuleError],
             hint: str = "") -> None:
    for key in raw:
        if key not in allowed:
            extra = f"; {hint}" if hint else ""
            errors.append(RuleError(join(path, str(key)),
                                    f"unknown key (allowed: {', '.join(sorted(allowed))}){extra}"))


def _match_dict(m: Match) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if m.names:
        d["name"] = m.names[0] if len(m.names) == 1 else list(m.names)
    if m.types:
        d["type"] = m.types[0] if len(m.types) == 1 else list(m.types)
    if m.clients:
        d["client"] = m.clients[0] if len(m.clients) == 1 else list(m.clients)
    if m.transport:
        d["transport"] = m.transport
    if m.count:
        c: dict[str, Any] = {}
        if m.count.first is not None:
            c["first"] = m.count.first
        if m.count.after:
            c["after"] = m.count.after
        if m.count.per:
            c["per"] = list(m.count.per)
        d["count"] = c
    return d


def _action_dict(a: Action) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if a.delay_ms:
        d["delay_ms"] = int(a.delay_ms) if a.delay_ms == int(a.delay_ms) else a.delay_ms
    if a.drop:
        d["drop"] = True
    if a.rcode:
        d["rcode"] = a.rcode
    if a.truncate:
        d["truncate"] = True
    if a.order != "fixed":
        d["order"] = a.order
    if a.ttl is not None:
        d["ttl"] = a.ttl
    return d


def preset_names() -> list[str]:
    return list(PRESETS)
