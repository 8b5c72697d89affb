"""Loading a topology: read the YAML, apply a variant and overrides, validate.

Validation has two layers, both collected before anything is reported:
the schema (``schema.py``: types, unknown keys, ranges) and the
cross-references (``checks.py``). Each problem names the file, the path inside
it and what was expected.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import Problem, TopologyError
from ..source import SourceDoc, load_yaml
from .checks import Loc, check_references
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
