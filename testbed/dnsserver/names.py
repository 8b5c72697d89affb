"""Domain-name helpers shared by the config, zone and rule code.

Names are kept as lower-case absolute strings ("mx10.brainbird.nl.") inside
the server: DNS matching is case-insensitive and plain strings are cheap to
hash and compare, unlike dnslib's DNSLabel.
"""

from __future__ import annotations

import re

# RFC 1035 limits; labels may also hold "_" (SRV, DKIM) and "*" (patterns).
_LABEL_RE = re.compile(r"^[A-Za-z0-9_*]([A-Za-z0-9_*-]{0,61}[A-Za-z0-9_*])?$")


def normalise(name: str) -> str:
    """Lower-case, absolute form of a name (adds the trailing dot)."""
    name = name.strip().lower()
    return name if name.endswith(".") else name + "."


def name_problem(name: object, *, allow_wildcard: bool = False) -> str | None:
    """Why ``name`` is not a usable absolute domain name, or None if it is."""
    if not isinstance(name, str):
        return f"must be a string, got {type(name).__name__}"
    if not name.endswith("."):
        return f"{name!r} must be absolute (end with '.')"
    if name == ".":
        return None
    if len(name) > 254:
        return f"{name!r} is longer than 253 characters"
    for label in name[:-1].split("."):
        if not _LABEL_RE.fullmatch(label) or (not allow_wildcard and "*" in label):
            return f"{name!r} has an invalid label {label!r}"
    return None


def is_subdomain(name: str, origin: str) -> bool:
    """True if normalised ``name`` equals or lies below normalised ``origin``."""
    return origin == "." or name == origin or name.endswith("." + origin)
