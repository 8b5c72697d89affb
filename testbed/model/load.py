"""Loading a topology: read the YAML, apply a variant and overrides, validate.

Validation has two layers, both collected before anything is reported:
the schema (``schema.py``: types, unknown keys, ranges) and the
cross-references (``checks.py``). Each problem names the file, the path inside
it and what was expected.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import Problem, TopologyError
from ..source import SourceDoc, format_path, load_yaml
from .checks import Loc, check_references
from .hints import allowed_keys, did_you_mean, text_problems
from .schema import EXPECT_KINDS, STEP_KINDS, Topology

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
    """Set ``a.b.c`` in nested mappings, creating mappings as needed.

    A number indexes a list (``scenario.0.send.id``): that element is patched,
    and an index past the end is an error, never a silent replacement of the list.
    """
    keys = dotted.split(".")
    if not all(k.strip() for k in keys):
        raise ValueError(f"bad path {dotted!r}: expected keys separated by dots, e.g. hosts.relay.stack")
    node: Any = data
    for depth, key in enumerate(keys):
        last = depth == len(keys) - 1
        where = ".".join(keys[:depth]) or "the top level"
        if isinstance(node, list):
            if not key.isdigit():
                raise ValueError(f"{where} is a list: expected an index 0..{len(node) - 1}, got {key!r}")
            index = int(key)
            if index >= len(node):
                raise ValueError(f"{where} has {len(node)} entries: index {index} is out of range")
            if last:
                node[index] = value
            elif not isinstance(node[index], dict | list):
                node[index] = {}
            node = node[index]
            continue
        if last:
            node[key] = value
        else:
            if not isinstance(node.get(key), dict | list):
                node[key] = {}
            node = node[key]


def parse_dotted(dotted: str) -> Loc:
    """``scenario.0.send`` -> ("scenario", 0, "send"), as problem locations are written."""
    return tuple(int(k) if k.isdigit() else k for k in dotted.split("."))


# Pydantic puts the union branch's tag into error locations; the tag is also
# the real key ("send"), so a repeated pair (send.send) is collapsed to one.
_UNION_TAGS = set(STEP_KINDS) | set(EXPECT_KINDS)


def _clean_loc(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """Drop the union tag pydantic inserts after ``scenario[i]`` / ``expect[i]``."""
    if len(loc) >= 3 and loc[0] in ("scenario", "expect") and isinstance(loc[1], int) and loc[2] in _UNION_TAGS:
        return loc[:2] + loc[3:]
    return loc


def _schema_message(err: Any) -> str:
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        return "unknown key" + did_you_mean(str(err["loc"][-1]), allowed_keys(tuple(err["loc"][:-1])))
    if err["type"] == "missing":
        return "required key is missing"
    if err["type"] in ("step_kind", "expect_kind") and isinstance(err.get("input"), Mapping):
        kinds = STEP_KINDS if err["type"] == "step_kind" else EXPECT_KINDS
        hint = next((h for k in err["input"] if (h := did_you_mean(str(k), kinds))), "")
        return msg + hint
    if msg.startswith("Value error, "):
        return msg[len("Value error, "):]
    return msg


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


@dataclass
class _Locator:
    """Turns a location in the patched document into a problem where the user wrote it.

    A value a ``--set`` put there is blamed on the option; a value from the
    variant's patch on the patch's line; anything else on the file as written.
    """

    doc: SourceDoc
    variant: str  # "" for the file as written
    overrides: tuple[tuple[str, Loc], ...]

    def problem(self, loc: Loc, message: str) -> Problem:
        depth = self.doc.depth_of(loc)
        patch: Loc = ("variants", self.variant, "patch")
        patch_depth = self.doc.depth_of(patch + loc) - len(patch) if self.variant else 0
        for dotted, keys in self.overrides:
            if loc[: len(keys)] == keys or keys[: max(depth, patch_depth) + 1] == loc[: max(depth, patch_depth) + 1]:
                return Problem("--set", format_path(loc), message)
        if self.variant and patch_depth > 0 and patch_depth >= depth:
            return self.doc.problem(patch + loc, message)
        return self.doc.problem(loc, message, self.variant)


def topology_from_doc(
    doc: SourceDoc, variant: str | None = None, overrides: Mapping[str, Any] | None = None
) -> Topology:
    data = copy.deepcopy(doc.data)
    names = variant_names(data)
    chosen = names[0] if variant is None else variant
    if chosen not in names:
        message = f"no variant {chosen!r}" + did_you_mean(chosen, names) + f"; this file has: {', '.join(names)}"
        raise TopologyError([Problem(doc.file, "--variant", message)])
    problems: list[Problem] = []
    if chosen != names[0]:
        patch = (data.get("variants") or {}).get(chosen) or {}
        if isinstance(patch, Mapping) and isinstance(patch.get("patch"), Mapping):
            data = deep_merge(data, patch["patch"])
    set_paths: list[tuple[str, Loc]] = []
    for dotted, value in (overrides or {}).items():
        try:
            set_path(data, dotted, value)
            set_paths.append((dotted, parse_dotted(dotted)))
        except ValueError as exc:
            problems.append(Problem("--set", dotted, str(exc)))
    data["variant"] = chosen
    where = _Locator(doc, chosen if chosen != names[0] else "", tuple(set_paths))
    for loc, message in text_problems(data):
        problems.append(where.problem(loc, message))
    variants = data.get("variants")
    if isinstance(variants, Mapping) and names[0] in variants:
        problems.append(where.problem(("variants", names[0]), (
            f"a variant cannot be named {names[0]!r}: that is the base variant (the file as written, "
            "see base_variant); rename one of them")))
    topo, dropped = _validate(data, where, problems)
    if topo is None:
        raise TopologyError(problems)
    for loc, message in check_references(topo):
        if not any(loc[: len(d)] == d for d in dropped) and not _mentions(message, dropped):
            problems.append(where.problem(loc, message))
    if problems:
        raise TopologyError(problems)
    return topo


#: Rounds of validating, setting aside what failed, and validating the rest again.
_ROUNDS = 10


def _validate(data: dict[str, Any], where: _Locator, problems: list[Problem]) -> tuple[Topology | None, set[Loc]]:
    """The schema's problems, each once: a bad value is set aside and the rest validated again.

    A value that fails is removed (a typo'd key, a bad optional value), so the
    entry holding it stays and nothing that refers to it fails as well. When
    its removal leaves the entry incomplete, the entry itself is set aside
    and problems that only follow from that are not reported again.
    """
    removed: set[Loc] = set()
    dropped: set[Loc] = set()
    for _ in range(_ROUNDS):
        try:
            return Topology.model_validate(data), dropped | removed
        except ValidationError as exc:
            changed = False
            for err in exc.errors():
                loc = _clean_loc(tuple(err["loc"]))
                if any(loc[: len(r)] == r for r in removed | dropped):
                    changed |= _set_aside(data, loc, dropped)  # a consequence of an earlier removal
                    continue
                problems.append(where.problem(loc, _schema_message(err)))
                if err["type"] == "missing" or not _remove(data, loc, removed):
                    changed |= _set_aside(data, loc, dropped)
                else:
                    changed = True
            if not changed:
                break
    return None, dropped | removed


def _remove(data: dict[str, Any], loc: Loc, removed: set[Loc]) -> bool:
    """Take out the value at ``loc``: a mapping loses that key, a list element costs its whole list.

    False if there is nothing to take out there (the entry is set aside instead).
    """
    if len(loc) < 2 or (len(loc) == 2 and loc[0] in _PLACEHOLDERS):
        return False
    holders: list[Any] = [data]
    for key in loc[:-1]:
        child = _child(holders[-1], key)
        if not isinstance(child, dict | list):
            return False
        holders.append(child)
    node = holders[-1]
    if isinstance(node, dict):
        if loc[-1] not in node:
            return False
        del node[loc[-1]]
        removed.add(loc)
        return True
    holder = holders[-2]
    if len(loc) > 2 and isinstance(holder, dict):
        del holder[loc[-2]]
        removed.add(loc[:-1])
        return True
    return False


def _child(node: Any, key: Any) -> Any:
    if isinstance(node, dict):
        return node.get(key)
    if isinstance(node, list) and isinstance(key, int) and 0 <= key < len(node):
        return node[key]
    return None


_COLLECTIONS = ("segments", "hosts", "domains", "variants")
# Valid stand-ins that keep the indexes of later list entries unchanged.
_PLACEHOLDERS = {"scenario": {"settle": {}}, "expect": {"log": {"host": "placeholder", "pattern": ""}}}
_REQUIRED_TOP = {"name": "placeholder", "segments": {}, "hosts": {}}


def _set_aside(data: dict[str, Any], loc: Loc, dropped: set[Loc]) -> bool:
    """Set aside the entry holding ``loc``; False if nothing changed."""
    if not loc:
        return False
    top = loc[0]
    if len(loc) >= 2 and top in _COLLECTIONS and isinstance(data.get(top), dict):
        dropped.add(loc[:2])
        return data[top].pop(loc[1], None) is not None
    if len(loc) >= 2 and top in _PLACEHOLDERS and isinstance(loc[1], int):
        seq = data.get(top)
        dropped.add(loc[:2])
        if isinstance(seq, list) and loc[1] < len(seq) and seq[loc[1]] != _PLACEHOLDERS[top]:
            seq[loc[1]] = copy.deepcopy(_PLACEHOLDERS[top])
            return True
        return False
    if top in data and data[top] != _REQUIRED_TOP.get(top, _ABSENT):
        if top in _REQUIRED_TOP:
            data[top] = copy.deepcopy(_REQUIRED_TOP[top])
        else:
            del data[top]
        dropped.add(loc[:1])
        return True
    return False


_ABSENT = object()


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
