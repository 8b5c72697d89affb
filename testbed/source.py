"""YAML documents that remember where each value came from.

The model reports problems by path (``hosts.mx20.segment``); this module turns a
path back into a line number so the message points into the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, TopologyError

PathKey = str | int


@dataclass(frozen=True)
class SourceDoc:
    """A parsed YAML mapping plus the node tree used to find line numbers."""

    file: str
    data: dict[str, Any]
    node: yaml.Node | None

    def line_of(self, path: tuple[PathKey, ...]) -> int | None:
        """Line (1-based) of the deepest node along ``path`` that exists."""
        return _line_of(self.node, path)

    def problem(self, path: tuple[PathKey, ...], message: str, variant: str = "") -> Problem:
        return Problem(self.file, format_path(path), message, self.line_of(path), variant)


def format_path(path: tuple[PathKey, ...]) -> str:
    out = ""
    for key in path:
        if isinstance(key, int):
            out += f"[{key}]"
        else:
            out += ("." if out else "") + str(key)
    return out


def _line_of(node: yaml.Node | None, path: tuple[PathKey, ...]) -> int | None:
    if node is None:
        return None
    line = node.start_mark.line + 1
    for key in path:
        child = None
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                if knode.value == str(key):
                    child = vnode
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
            if 0 <= key < len(node.value):
                child = node.value[key]
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return line


def load_yaml(path: Path) -> SourceDoc:
    """Read one YAML mapping; syntax errors become a ``TopologyError``."""
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TopologyError([Problem(name, "", f"cannot read file: {exc.strerror or exc}")]) from None
    return parse_yaml(text, name)


def parse_yaml(text: str, name: str = "<string>") -> SourceDoc:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise TopologyError([Problem(name, "", f"not valid YAML: {reason}", line)]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TopologyError([Problem(name, "", "expected a mapping at the top level", 1)])
    return SourceDoc(name, data, node)
