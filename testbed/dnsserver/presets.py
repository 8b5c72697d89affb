"""Named presets for the study's DNS timing cases.

A preset expands to plain rule dicts, which then go through the ordinary rule
parser, so a preset can never produce a rule the user could not have written.
Each preset sets the query type itself; the user supplies the rest of
``match`` (name, client, transport, count) and the preset's parameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Expand = Callable[[str, dict[str, Any], dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str                       # one line, shown in docs and errors
    params: dict[str, Any]             # parameter -> default
    sets_type: bool                    # True: the preset chooses match.type
    expand: Expand = field(repr=False)


def _typed(match: dict[str, Any], qtype: str) -> dict[str, Any]:
    return {**match, "type": qtype}


def _late(late: str) -> Expand:
    def expand(name: str, match: dict[str, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
        # Only the late type needs a rule: the other type is answered from the
        # zone at once, so it arrives first.
        return [{"name": name, "match": _typed(match, late), "action": {"delay_ms": p["delay_ms"]}}]
    return expand


def _empty_first(empty: str, late: str) -> Expand:
    def expand(name: str, match: dict[str, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            {"name": f"{name}/{empty.lower()}", "match": _typed(match, empty),
             "action": {"rcode": "NODATA"}},
            {"name": f"{name}/{late.lower()}", "match": _typed(match, late),
             "action": {"delay_ms": p["delay_ms"]}},
        ]
    return expand


def _one(action: Callable[[dict[str, Any]], dict[str, Any]], qtype: str | None = None) -> Expand:
    def expand(name: str, match: dict[str, Any], p: dict[str, Any]) -> list[dict[str, Any]]:
        m = _typed(match, qtype) if qtype else dict(match)
        return [{"name": name, "match": m, "action": action(p)}]
    return expand


def _with_delay(base: dict[str, Any]) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda p: {**base, **({"delay_ms": p["delay_ms"]} if p["delay_ms"] else {})}


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("aaaa-late", "A answered at once, AAAA answered delay_ms later",
           {"delay_ms": 200}, True, _late("AAAA")),
    Preset("a-late", "AAAA answered at once, A answered delay_ms later",
           {"delay_ms": 200}, True, _late("A")),
    Preset("empty-a-first",
           "A answered at once with NODATA (empty), AAAA answered delay_ms later "
           "(the Mac OS X 10.6 failure: only AAAA exists, the empty A wins the race)",
           {"delay_ms": 200}, True, _empty_first("A", "AAAA")),
    Preset("empty-aaaa-first",
           "AAAA answered at once with NODATA (empty), A answered delay_ms later",
           {"delay_ms": 200}, True, _empty_first("AAAA", "A")),
    Preset("aaaa-servfail", "AAAA answered with SERVFAIL (after delay_ms)",
           {"delay_ms": 0}, True, _one(_with_delay({"rcode": "SERVFAIL"}), "AAAA")),
    Preset("aaaa-timeout", "AAAA queries dropped: the client times out",
           {}, True, _one(lambda p: {"drop": True}, "AAAA")),
    Preset("tcp-fallback", "every UDP answer truncated (TC=1): the client retries over TCP",
           {}, False, _one(lambda p: {"truncate": True})),
    Preset("round-robin", "answer order rotated by one record per query",
           {}, False, _one(lambda p: {"order": "rotate"})),
]}
