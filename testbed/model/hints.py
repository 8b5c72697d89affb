"""Help for the person fixing a file: did-you-mean suggestions and strings that cannot be used.

``allowed_keys`` walks the schema's types to the mapping a location points
into, so an unknown key can be answered with the closest known one
(``difflib.get_close_matches``). ``text_problems`` finds control characters in
any string of a document: they would split lines in rendered configuration
files, add message headers, or reach the terminal as escape sequences.
"""

from __future__ import annotations

import difflib
import types
import typing
import re
from collections.abc import Iterable, Iterator
from typing import Any

from pydantic import BaseModel

from .schema import Topology

Loc = tuple[str | int, ...]

#: Keys whose values are free text shown to people, where a line break or a tab is fine.
FREE_TEXT_KEYS = frozenset({"description", "title", "study"})


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """E.g. " (did you mean 'software'?)", or "" when nothing is close."""
    close = difflib.get_close_matches(word, sorted(set(choices)), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def allowed_keys(loc: tuple[Any, ...], root: Any = Topology) -> list[str]:
    """The keys the schema allows in the mapping at ``loc`` (a raw pydantic location, union tags included)."""
    tp: Any = root
    for key in loc:
        tp = _step(tp, key)
        if tp is None:
            return []
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or name for name, f in tp.model_fields.items() if name != "variant"]
    return []


def _step(tp: Any, key: Any) -> Any:
    """The type one key further down; a tagged union (scenario steps, expectations) consumes its tag."""
    tp = _unwrap(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return next((typing.get_args(b)[0] for b in typing.get_args(tp) if _tag(b) == key), None)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return next((f.annotation for name, f in tp.model_fields.items() if key in (name, f.alias)), None)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list and isinstance(key, int):
        return args[0]
    if origin is dict:
        return args[1]
    return None


def _unwrap(tp: Any) -> Any:
    """Strip Annotated (but not from a tagged branch) and Optional."""
    while True:
        if typing.get_origin(tp) is typing.Annotated and _tag(tp) is None:
            tp = typing.get_args(tp)[0]
        elif typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp):
            rest = [b for b in typing.get_args(tp) if b is not type(None)]
            if len(rest) != 1:
                return tp
            tp = rest[0]
        else:
            return tp


def _tag(tp: Any) -> Any:
    if typing.get_origin(tp) is typing.Annotated:
        return next((m.tag for m in typing.get_args(tp)[1:] if hasattr(m, "tag")), None)
    return None


def text_problems(data: Any) -> list[tuple[Loc, str]]:
    """Strings with control characters, each reported once; the character is removed so the rest validates."""
    out: list[tuple[Loc, str]] = []
    for loc, holder, key, value, is_key in _strings(data):
        free = bool(loc) and loc[-1] in FREE_TEXT_KEYS and not is_key
        found = (_CONTROL_BUT_LINES if free else _CONTROL).search(value)
        if found is None:
            continue
        bad = [found.group()]
        out.append((loc, f"contains the control character U+{ord(bad[0]):04X}; "
                         + ("only line breaks and tabs are allowed in free text" if free
                            else "names, addresses and values are single-line text")))
        clean = "".join(c for c in value if not _forbidden(c, free))
        if is_key:
            holder[clean] = holder.pop(value)
        else:
            holder[key] = clean
    return out


# Unicode's control characters (category Cc) and the line and paragraph separators.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_CONTROL_BUT_LINES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _forbidden(char: str, free_text: bool) -> bool:
    return bool((_CONTROL_BUT_LINES if free_text else _CONTROL).match(char))


def _strings(data: Any) -> Iterator[tuple[Loc, Any, Any, str, bool]]:
    stack: list[tuple[Loc, Any]] = [((), data)]
    while stack:
        loc, node = stack.pop()
        if isinstance(node, dict):
            for key, value in list(node.items()):
                if isinstance(key, str):
                    yield (*loc, key), node, key, key, True
                if isinstance(value, str):
                    yield (*loc, key), node, key, value, False
                else:
                    stack.append(((*loc, key), value))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if isinstance(value, str):
                    yield (*loc, i), node, i, value, False
                else:
                    stack.append(((*loc, i), value))
