"""Load and validate the server config (JSON written by the testbed planner).

All problems are collected and reported together, each with its path, e.g.
``zones[0].records[2].data: 'zz' is not an IPv6 address``.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass, field
from typing import Any

from dnslib import QTYPE, RR

from .errors import ConfigError, Problem, join
from .names import is_subdomain, name_problem, normalise
from .rules import Rule, parse_rules
from .zones import Zone

DEFAULT_TTL = 60

# Number of whitespace-separated rdata tokens each type takes (None: one or
# more). dnslib's zone parser silently ignores trailing tokens and raises bare
# IndexError/ValueError on missing ones, so we check before handing it over.
RDATA_TOKENS: dict[str, int | None] = {
    "A": 1, "AAAA": 1, "NS": 1, "CNAME": 1, "PTR": 1,
    "MX": 2, "SRV": 4, "SOA": 7, "TXT": None,
}
SOA_FIELDS = ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum")

_TOP_KEYS = {"listen", "port", "zones", "rules"}
_ZONE_KEYS = {"origin", "soa", "ttl", "records"}
_RECORD_KEYS = {"name", "type", "ttl", "data"}


@dataclass
class Config:
    listen: list[str]
    port: int
    zones: list[Zone]
    rules: list[Rule] = field(default_factory=list)   # initial rules (changeable at run time)


def load_config(path: str) -> Config:
    """Read and validate a JSON config file; raise ConfigError on any problem."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError([Problem("", f"cannot read config: {e.strerror or e}")], path) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError([Problem("", f"not valid JSON: {e}")], path) from None
    return parse_config(raw, source=path)


def parse_config(raw: Any, source: str = "") -> Config:
    problems: list[Problem] = []
    if not isinstance(raw, dict):
        raise ConfigError([Problem("", "the config must be a JSON object")], source)
    _unknown_keys(raw, _TOP_KEYS, "", problems)
    listen = _parse_listen(raw.get("listen"), problems)
    port = _parse_int(raw.get("port", 53), "port", 0, 65535, problems)
    zones = _parse_zones(raw.get("zones"), problems)
    rules, rule_errors = parse_rules(raw.get("rules", []), "rules")
    problems.extend(rule_errors)
    if problems:
        raise ConfigError(problems, source)
    return Config(listen=listen, port=port, zones=zones, rules=rules)


def _unknown_keys(d: dict[str, Any], allowed: set[str], path: str, problems: list[Problem]) -> None:
    for key in d:
        if key not in allowed:
            problems.append(Problem(join(path, str(key)),
                                    f"unknown key (allowed: {', '.join(sorted(allowed))})"))


def _parse_int(v: Any, path: str, lo: int, hi: int, problems: list[Problem]) -> int:
    # bool is an int subclass; "port": true is a typo, not 1.
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        problems.append(Problem(path, f"must be an integer from {lo} to {hi}, got {v!r}"))
        return lo
    return v


def _parse_listen(v: Any, problems: list[Problem]) -> list[str]:
    if not isinstance(v, list) or not v:
        problems.append(Problem("listen", "must be a non-empty list of IP addresses"))
        return []
    out: list[str] = []
    for i, addr in enumerate(v):
        try:
            ip = ipaddress.ip_address(addr)
        except (ValueError, TypeError):
            problems.append(Problem(join("listen", i), f"{addr!r} is not an IP address"))
            continue
        if str(ip) in out:
            problems.append(Problem(join("listen", i), f"{ip} is listed twice"))
        out.append(str(ip))
    return out


def _parse_zones(v: Any, problems: list[Problem]) -> list[Zone]:
    if not isinstance(v, list) or not v:
        problems.append(Problem("zones", "must be a non-empty list of zones"))
        return []
    zones: list[Zone] = []
    origins: dict[str, int] = {}
    for i, raw in enumerate(v):
        path = join("zones", i)
        zone = _parse_zone(raw, path, problems)
        origin = raw.get("origin") if isinstance(raw, dict) else None
        if not isinstance(origin, str) or name_problem(origin):
            continue
        origin = normalise(origin)
        if origin in origins:
            problems.append(Problem(join(path, "origin"),
                                    f"{origin} is already defined by zones[{origins[origin]}]"))
            continue
        origins[origin] = i
        if zone is not None:
            zones.append(zone)
    return zones


def _parse_zone(raw: Any, path: str, problems: list[Problem]) -> Zone | None:
    if not isinstance(raw, dict):
        problems.append(Problem(path, "must be an object"))
        return None
    _unknown_keys(raw, _ZONE_KEYS, path, problems)
    before = len(problems)
    origin_raw = raw.get("origin")
    err = name_problem(origin_raw)
    if err or not isinstance(origin_raw, str):
        problems.append(Problem(join(path, "origin"), err or "must be a string"))
        return None
    origin = normalise(origin_raw)
    ttl = _parse_int(raw.get("ttl", DEFAULT_TTL), join(path, "ttl"), 0, 2**31 - 1, problems)
    soa = _parse_soa(raw.get("soa"), origin, ttl, join(path, "soa"), problems)
    records = raw.get("records", [])
    if not isinstance(records, list):
        problems.append(Problem(join(path, "records"), "must be a list"))
        records = []
    rrs: list[tuple[str, RR]] = []
    for j, rec in enumerate(records):
        rpath = join(join(path, "records"), j)
        rr = _parse_record(rec, origin, ttl, rpath, problems)
        if rr is not None:
            rrs.append((rpath, rr))
    if soa is None or len(problems) > before:
        return None
    zone = Zone(origin=origin, soa=soa)
    zone.add(soa)
    _check_rrsets(rrs, problems)
    for _p, rr in rrs:
        zone.add(rr)
    return zone


def _parse_soa(raw: Any, origin: str, ttl: int, path: str, problems: list[Problem]) -> RR | None:
    if not isinstance(raw, dict):
        problems.append(Problem(path, f"must be an object with {', '.join(SOA_FIELDS)}"))
        return None
    _unknown_keys(raw, set(SOA_FIELDS), path, problems)
    before = len(problems)
    for key in SOA_FIELDS:
        fpath = join(path, key)
        if key not in raw:
            problems.append(Problem(fpath, "is missing"))
        elif key in ("mname", "rname"):
            err = name_problem(raw[key])
            if err:
                problems.append(Problem(fpath, err))
        else:
            _parse_int(raw[key], fpath, 0, 2**32 - 1, problems)
    if len(problems) > before:
        return None
    text = " ".join(str(raw[k]) for k in SOA_FIELDS)
    return RR.fromZone(f"{origin} {ttl} IN SOA {text}")[0]


def _parse_record(raw: Any, origin: str, zone_ttl: int, path: str,
                  problems: list[Problem]) -> RR | None:
    if not isinstance(raw, dict):
        problems.append(Problem(path, "must be an object with name, type, data"))
        return None
    _unknown_keys(raw, _RECORD_KEYS, path, problems)
    before = len(problems)
    name = raw.get("name")
    err = name_problem(name)
    if err:
        problems.append(Problem(join(path, "name"), err))
    elif isinstance(name, str) and not is_subdomain(normalise(name), origin):
        problems.append(Problem(join(path, "name"), f"{name} is outside the zone {origin}"))
    rtype = raw.get("type")
    if isinstance(rtype, str) and rtype.upper() == "SOA":
        # A second SOA at the apex would be served next to the zone's own.
        problems.append(Problem(join(path, "type"),
                                "SOA records come from the zone's soa object, not from records"))
    elif not isinstance(rtype, str) or rtype.upper() not in RDATA_TOKENS:
        allowed = ", ".join(t for t in RDATA_TOKENS if t != "SOA")
        problems.append(Problem(join(path, "type"), f"{rtype!r} is not supported (use one of {allowed})"))
    ttl = _parse_int(raw.get("ttl", zone_ttl), join(path, "ttl"), 0, 2**31 - 1, problems)
    data = raw.get("data")
    if not isinstance(data, str) or not data.strip():
        problems.append(Problem(join(path, "data"), "must be a non-empty string (master-file rdata)"))
    if len(problems) > before:
        return None
    assert isinstance(name, str) and isinstance(rtype, str) and isinstance(data, str)
    rtype = rtype.upper()
    err = _rdata_problem(rtype, data)
    if err:
        problems.append(Problem(join(path, "data"), err))
        return None
    try:
        rrs = RR.fromZone(f"{normalise(name)} {ttl} IN {rtype} {data}", origin=origin)
    except Exception as e:  # dnslib raises assorted ValueError/IndexError/DNSError
        problems.append(Problem(join(path, "data"), f"cannot parse {data!r} as {rtype} rdata: {e}"))
        return None
    if len(rrs) != 1 or rrs[0].rtype != getattr(QTYPE, rtype):
        problems.append(Problem(join(path, "data"), f"{data!r} is not one {rtype} record"))
        return None
    return rrs[0]


def record_problems(name: str, rtype: str, data: str) -> list[str]:
    """Why the server would refuse one record (name, type, master-file data), as messages."""
    problems: list[Problem] = []
    _parse_record({"name": normalise(name) if isinstance(name, str) else name, "type": rtype, "data": data},
                  ".", DEFAULT_TTL, "", problems)
    return [p.message for p in problems]


def _rdata_problem(rtype: str, data: str) -> str | None:
    if any(c in data for c in "\n\r;()"):
        # These would change how dnslib's master-file parser reads the line.
        return f"{data!r} contains a newline, ';' or parentheses"
    tokens = data.split()
    want = RDATA_TOKENS[rtype]
    if want is not None and len(tokens) != want and rtype != "TXT":
        return f"{rtype} data takes {want} field(s), got {len(tokens)} in {data!r}"
    if rtype in ("A", "AAAA"):
        try:
            ip = ipaddress.ip_address(tokens[0])
        except ValueError:
            ip = None
        if ip is None or ip.version != (4 if rtype == "A" else 6):
            return f"{data!r} is not an IPv{4 if rtype == 'A' else 6} address"
    if rtype in ("NS", "CNAME", "PTR", "MX", "SRV"):
        target = tokens[-1]
        if target.endswith(".") and name_problem(target):
            return f"target {name_problem(target)}"
        for num in tokens[:-1]:
            if not num.isdigit() or int(num) > 65535:
                return f"{num!r} in {data!r} must be an integer from 0 to 65535"
    return None


def _check_rrsets(rrs: list[tuple[str, RR]], problems: list[Problem]) -> None:
    """CNAME must stand alone at its name (RFC 1034 §3.6.2); no exact duplicates."""
    types_at: dict[str, set[int]] = {}
    seen: set[tuple[str, int, bytes]] = set()
    for path, rr in rrs:
        owner = normalise(str(rr.rname))
        key = (owner, rr.rtype, str(rr.rdata).lower().encode())
        if key in seen:
            problems.append(Problem(path, f"duplicate record {owner} {QTYPE[rr.rtype]} {rr.rdata}"))
        seen.add(key)
        types = types_at.setdefault(owner, set())
        if (QTYPE.CNAME in types and rr.rtype != QTYPE.CNAME) or \
           (rr.rtype == QTYPE.CNAME and types - {QTYPE.CNAME}) or \
           (rr.rtype == QTYPE.CNAME and QTYPE.CNAME in types):
            problems.append(Problem(path, f"{owner} has a CNAME and other data (or two CNAMEs)"))
        types.add(rr.rtype)
