"""glibc's /etc/gai.conf: the address-selection tables of getaddrinfo (pure: data in, text out).

glibc sorts getaddrinfo's answer by RFC 3484's rules with three tables:
``label`` and ``precedence`` (IPv6 prefixes; an IPv4 address is looked up as
``::ffff:a.b.c.d``) and ``scopev4`` (the scope of IPv4 addresses). What
glibc 2.36 (bookworm) and 2.41 (trixie) do with the file, read in their
``getaddrinfo.c`` (``gaiconf_init``, ``add_prefixlist``):

- the file is read once per process (unless it says ``reload yes``);
- **one line of a kind replaces glibc's whole built-in table of that kind**,
  so a table that changes one entry must be written out in full;
- a table without a ``::/0`` line (``scopev4``: ``::ffff:0.0.0.0/96``) gets
  one appended: label 1, precedence 40, scope 14;
- a line glibc cannot parse is ignored without a word, which is why the
  topology's entries are checked here instead (``prefix_problem``,
  ``value_problem``).

Two named tables: ``glibc-default`` is glibc's built-in table (RFC 3484's,
plus glibc's own labels for site-local, ULA and Teredo), written out, and
``rfc6724`` is RFC 6724's (section 2.1; its IPv4 scopes are glibc's own
since 2.17). Explicit entries go on top of a named table: an entry for a
prefix the table has replaces the table's value, others are added.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence

#: The kinds of lines, in the order they are written.
KINDS = ("precedence", "label", "scopev4")
#: glibc refuses values above INT_MAX (``val <= INT_MAX`` in add_prefixlist).
INT_MAX = 2**31 - 1
#: A scope is a 4-bit value (RFC 4291 2.7: 1 interface-local ... 14 global, 15 reserved).
MAX_SCOPE = 15

Entry = tuple[str, int]

#: glibc 2.36 / 2.41 built-in tables (getaddrinfo.c: default_precedence, default_labels, default_scopes).
GLIBC_DEFAULT: dict[str, tuple[Entry, ...]] = {
    "precedence": (
        ("::1/128", 50),
        ("::/0", 40),
        ("2002::/16", 30),
        ("::/96", 20),
        ("::ffff:0:0/96", 10),
    ),
    "label": (
        ("::1/128", 0),
        ("::/0", 1),
        ("2002::/16", 2),
        ("::/96", 3),
        ("::ffff:0:0/96", 4),
        ("fec0::/10", 5),
        ("fc00::/7", 6),
        ("2001::/32", 7),  # glibc's "additional rule for Teredo tunnels"
    ),
    "scopev4": (
        ("::ffff:169.254.0.0/112", 2),
        ("::ffff:127.0.0.0/104", 2),
        ("::ffff:0.0.0.0/96", 14),
    ),
}

#: RFC 6724 section 2.1 (policy table) and 3.2 (IPv4 scopes: loopback and link-local are link-local).
RFC6724: dict[str, tuple[Entry, ...]] = {
    "precedence": (
        ("::1/128", 50),
        ("::/0", 40),
        ("::ffff:0:0/96", 35),
        ("2002::/16", 30),
        ("2001::/32", 5),
        ("fc00::/7", 3),
        ("::/96", 1),
        ("fec0::/10", 1),
        ("3ffe::/16", 1),
    ),
    "label": (
        ("::1/128", 0),
        ("::/0", 1),
        ("::ffff:0:0/96", 4),
        ("2002::/16", 2),
        ("2001::/32", 5),
        ("fc00::/7", 13),
        ("::/96", 3),
        ("fec0::/10", 11),
        ("3ffe::/16", 12),
    ),
    "scopev4": GLIBC_DEFAULT["scopev4"],
}

TABLES: dict[str, dict[str, tuple[Entry, ...]]] = {"glibc-default": GLIBC_DEFAULT, "rfc6724": RFC6724}

_SOURCES = {
    "glibc-default": "glibc 2.36/2.41's built-in table (RFC 3484, plus labels for fec0::/10, fc00::/7, 2001::/32)",
    "rfc6724": "RFC 6724 section 2.1 (IPv4 scopes as RFC 6724 section 3.2 and glibc since 2.17)",
}

_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def parse_prefix(kind: str, text: str) -> ipaddress.IPv6Network:
    """The prefix of a ``kind`` line as glibc reads it (scopev4: IPv4 or ``::ffff:a.b.c.d``); ValueError if not."""
    problem = prefix_problem(kind, text)
    if problem:
        raise ValueError(problem)
    return _network(kind, text)


def _network(kind: str, text: str) -> ipaddress.IPv6Network:
    text = text.strip()
    if kind == "scopev4" and ":" not in text:
        v4 = ipaddress.IPv4Network(text)
        return ipaddress.IPv6Network(f"::ffff:{v4.network_address}/{96 + v4.prefixlen}")
    return ipaddress.IPv6Network(text)


def prefix_problem(kind: str, text: str) -> str | None:
    """What is wrong with a prefix for a ``kind`` line, or None."""
    if not isinstance(text, str) or not text.strip():
        return "expected a prefix such as 2001::/32"
    text = text.strip()
    if "/" not in text:
        return f"give the prefix length, e.g. {text}/128" if ":" in text else f"give the prefix length, e.g. {text}/32"
    address, _, length = text.partition("/")
    if not length.isdigit():
        return f"{length!r} is not a prefix length"
    if kind == "scopev4":
        if ":" not in address:
            try:
                ipaddress.IPv4Network(text)
            except ValueError as exc:
                return _why(exc, text, "an IPv4 prefix such as 169.254.0.0/16 or ::ffff:169.254.0.0/112")
            return None
        try:
            net = ipaddress.IPv6Network(text)
        except ValueError as exc:
            return _why(exc, text, "an IPv4 prefix such as 169.254.0.0/16 or ::ffff:169.254.0.0/112")
        if net.prefixlen < 96 or not net.subnet_of(_MAPPED):
            return (f"{text} is not an IPv4 prefix: scopev4 takes an IPv4 prefix (169.254.0.0/16) or an "
                    "IPv4-mapped one (::ffff:169.254.0.0/112, length 96 to 128)")
        return None
    if ":" not in address:
        try:
            v4 = ipaddress.IPv4Network(text)
        except ValueError:
            return f"{text} is not an IPv6 prefix"
        return ("label and precedence take IPv6 prefixes; glibc looks IPv4 addresses up as IPv4-mapped ones: "
                f"write ::ffff:{v4.network_address}/{96 + v4.prefixlen}")
    try:
        ipaddress.IPv6Network(text)
    except ValueError as exc:
        return _why(exc, text, "an IPv6 prefix such as 2001::/32")
    return None


def _why(exc: ValueError, text: str, expected: str) -> str:
    message = str(exc)
    if "has host bits set" in message:
        try:
            net = ipaddress.ip_network(text, strict=False)
        except ValueError:
            return f"{text} has bits set beyond its prefix length"
        return f"{text} has bits set beyond its prefix length (did you mean {net}?)"
    return f"{text} is not {expected}"


def value_problem(kind: str, value: object) -> str | None:
    """What is wrong with a ``kind`` line's value, or None."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "expected a whole number"
    if kind == "scopev4":
        if not 0 <= value <= MAX_SCOPE:
            return f"a scope is 0 to {MAX_SCOPE} (2 link-local, 5 site-local, 14 global)"
        return None
    if not 0 <= value <= INT_MAX:
        return f"expected 0 to {INT_MAX} (glibc ignores a line with a larger value)"
    return None


def merged(table: str | None, entries: Mapping[str, Sequence[Entry]]) -> dict[str, list[tuple[ipaddress.IPv6Network, int]]]:
    """The lines of each kind: the named table's, with the explicit entries on top (same prefix: replaced).

    A kind with neither table nor entries is absent: glibc keeps its built-in table for it.
    """
    base = TABLES[table] if table else {}
    out: dict[str, list[tuple[ipaddress.IPv6Network, int]]] = {}
    for kind in KINDS:
        lines = {_network(kind, p): v for p, v in base.get(kind, ())}
        for prefix, value in entries.get(kind, ()):
            lines[_network(kind, prefix)] = value
        if lines:
            out[kind] = list(lines.items())
    return out


def duplicates(kind: str, prefixes: Iterable[str]) -> list[tuple[int, str]]:
    """(index, message) for each prefix that repeats an earlier one of the same kind (glibc would keep both)."""
    seen: dict[ipaddress.IPv6Network, int] = {}
    out = []
    for i, text in enumerate(prefixes):
        if prefix_problem(kind, text):
            continue
        net = _network(kind, text)
        if net in seen:
            out.append((i, f"{text} is the prefix of {kind}[{seen[net]}] again; give each prefix once"))
        else:
            seen[net] = i
    return out


def _shown(kind: str, net: ipaddress.IPv6Network) -> str:
    if kind == "scopev4" or (net.subnet_of(_MAPPED) and net.prefixlen > 96):
        return f"::ffff:{ipaddress.IPv4Address(int(net.network_address) & 0xFFFFFFFF)}/{net.prefixlen}"
    return str(net)


def summary(table: str | None, entries: Mapping[str, Sequence[Entry]]) -> str:
    """A short name for what a host's gai.conf holds: ``rfc6724``, ``glibc-default + 1 line``, ``2 lines``."""
    n = sum(len(entries.get(k, ())) for k in KINDS)
    lines = f"{n} line{'' if n == 1 else 's'}"
    if table:
        return f"{table} + {lines}" if n else table
    return lines


def render(table: str | None = None, entries: Mapping[str, Sequence[Entry]] | None = None, host: str = "") -> str:
    """The text of /etc/gai.conf: every line of each kind the table or the entries touch."""
    entries = entries or {}
    lines = [f"# /etc/gai.conf{' of ' + host if host else ''}, rendered by testbed (testbed/gaiconf.py).",
             "# glibc reads one line of a kind as the whole table of that kind: each kind below is complete."]
    if table:
        lines.append(f"# table {table}: {_SOURCES[table]}")
    if any(entries.get(k) for k in KINDS):
        given = ", ".join(f"{k} {p} {v}" for k in KINDS for p, v in entries.get(k, ()))
        lines.append(f"# on top of it, from the topology: {given}" if table else f"# from the topology: {given}")
    tables = merged(table, entries)
    for kind in KINDS:
        if kind not in tables:
            lines.append(f"# no {kind} lines: glibc's built-in {kind} table applies")
            continue
        lines.append("")
        width = max(len(_shown(kind, n)) for n, _ in tables[kind])
        for net, value in tables[kind]:
            lines.append(f"{kind} {_shown(kind, net):<{width}} {value}")
    return "\n".join(lines) + "\n"
