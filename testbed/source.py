"""YAML documents that remember where each value came from.

The model reports problems by path (``hosts.mx20.segment``); this module turns a
path back into a line number so the message points into the file.

Reading is bounded, so that no input can crash, hang or exhaust memory: only
regular files of at most ``MAX_BYTES`` are read, the text must be UTF-8,
nesting is limited to ``MAX_DEPTH`` levels and aliases may not expand the
document beyond ``MAX_VALUES`` values (a "billion laughs" alias bomb).
A key given twice in one mapping is an error naming both lines, not a
silent replacement of the first.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import Problem, TopologyError

PathKey = str | int

#: Larger than any real topology or rule file (20,000 DNS rules are about 1.5 MB).
MAX_BYTES = 8 * 1024 * 1024
#: Topologies nest about 6 levels deep; DNS rules inside a variant's patch about 10.
MAX_DEPTH = 64
#: Values in the document with every alias expanded.
MAX_VALUES = 1_000_000


@dataclass(frozen=True)
class SourceDoc:
    """A parsed YAML mapping plus the node tree used to find line numbers."""

    file: str
    data: Any
    node: yaml.Node | None

    def line_of(self, path: tuple[PathKey, ...]) -> int | None:
        """Line (1-based) of the deepest node along ``path`` that exists."""
        return _line_of(self.node, path)[0]

    def depth_of(self, path: tuple[PathKey, ...]) -> int:
        """How many keys of ``path`` exist in the document."""
        return _line_of(self.node, path)[1]

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


def child_node(node: yaml.Node, key: PathKey) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for knode, vnode in node.value:
            if isinstance(knode, yaml.ScalarNode) and knode.value == str(key):
                return vnode
    elif isinstance(node, yaml.SequenceNode) and isinstance(key, int):
        if 0 <= key < len(node.value):
            return node.value[key]
    return None


def _line_of(node: yaml.Node | None, path: tuple[PathKey, ...]) -> tuple[int | None, int]:
    if node is None:
        return None, 0
    line = node.start_mark.line + 1
    depth = 0
    for key in path:
        child = child_node(node, key)
        if child is None:
            break
        node = child
        depth += 1
        line = node.start_mark.line + 1
    return line, depth


def read_text(path: Path) -> str:
    """The text of a regular UTF-8 file of at most MAX_BYTES; else a ``TopologyError``."""
    name = str(path)

    def fail(message: str, line: int | None = None) -> TopologyError:
        return TopologyError([Problem(name, "", message, line)])

    try:
        info = os.stat(path)
        if stat.S_ISDIR(info.st_mode):
            raise fail("is a directory, expected a YAML file")
        if not stat.S_ISREG(info.st_mode):
            raise fail("is not a regular file (a FIFO, device or socket), expected a YAML file")
        if info.st_size > MAX_BYTES:
            raise fail(f"is {info.st_size} bytes, larger than the limit of {MAX_BYTES} bytes")
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        raise fail(f"cannot read file: {exc.strerror or exc}") from None
    if len(raw) > MAX_BYTES:
        raise fail(f"is larger than the limit of {MAX_BYTES} bytes")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise fail(f"is not UTF-8 text (byte 0x{raw[exc.start]:02x})", line) from None


def load_yaml(path: Path, top: type | tuple[type, ...] = dict) -> SourceDoc:
    """Read one YAML document (a mapping unless ``top`` says otherwise); problems become a ``TopologyError``."""
    return parse_yaml(read_text(Path(path)), str(path), top)


class _Problem(Exception):
    def __init__(self, message: str, mark: yaml.Mark | None, node: yaml.Node | None = None):
        self.message = message
        self.line = mark.line + 1 if mark else None
        self.node = node


# libyaml's parser when PyYAML has it: the pure-Python one needs seconds per megabyte.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):  # type: ignore[misc, valid-type]
    """The safe loader; a value Python cannot build is a problem at its node, not a crash."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, TypeError, OverflowError) as exc:
            # A value YAML's resolver types but Python cannot build, e.g. the date 2024-13-01.
            raise _Problem(f"not valid YAML: {exc}", node.start_mark, node) from None


def _check_depth(text: str) -> None:
    """Refuse deep nesting from the event stream, before the (recursive) composer sees it."""
    depth = 0
    for event in yaml.parse(text, Loader=_Base):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _Problem(f"nested more than {MAX_DEPTH} levels deep", event.start_mark)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def parse_yaml(text: str, name: str = "<string>", top: type | tuple[type, ...] = dict) -> SourceDoc:
    loader = _Loader(text)
    node: yaml.Node | None = None
    try:
        _check_depth(text)
        node = loader.get_single_node()
        if node is not None:
            _check_nodes(node)
        data = loader.construct_document(node) if node is not None else None
    except _Problem as exc:
        path = format_path(_path_to(node, exc.node)) if node is not None and exc.node is not None else ""
        raise TopologyError([Problem(name, path, exc.message, exc.line)]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise TopologyError([Problem(name, "", f"not valid YAML: {reason}", line)]) from None
    finally:
        loader.dispose()
    if data is None:
        data = {} if top is dict else data
    if not isinstance(data, top):
        kinds = top if isinstance(top, tuple) else (top,)
        wanted = " or ".join({"dict": "a mapping", "list": "a list"}.get(t.__name__, t.__name__) for t in kinds)
        raise TopologyError([Problem(name, "", f"expected {wanted} at the top level", 1)])
    return SourceDoc(name, data, node)


def _path_to(root: yaml.Node, target: yaml.Node) -> tuple[PathKey, ...]:
    """The path of the first way from the root to ``target`` (a key node: its mapping's path plus the key)."""
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[PathKey, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if node is target:
            return path
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for knode, vnode in node.value:
                key = knode.value if isinstance(knode, yaml.ScalarNode) else "?"
                if knode is target:
                    return (*path, key)
                stack.append((vnode, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            stack += [(child, (*path, i)) for i, child in enumerate(node.value)]
    return ()


def _check_nodes(root: yaml.Node) -> None:
    """Duplicate keys and alias bombs, found on the node graph before anything is built."""
    sizes: dict[int, int] = {}
    for node in _postorder(root):
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], yaml.Node] = {}
            for knode, _ in node.value:
                if not isinstance(knode, yaml.ScalarNode) or knode.tag == "tag:yaml.org,2002:merge":
                    continue
                key = (knode.tag, knode.value)
                if key in seen:
                    first = seen[key].start_mark.line + 1
                    raise _Problem(
                        f"key {knode.value!r} is given twice, at lines {first} and {knode.start_mark.line + 1}",
                        knode.start_mark,
                        knode,
                    )
                seen[key] = knode
            children = [n for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        size = 1 + sum(sizes[id(c)] for c in children)
        if size > MAX_VALUES:
            raise _Problem(f"aliases expand the document to more than {MAX_VALUES} values", node.start_mark)
        sizes[id(node)] = size


def _postorder(root: yaml.Node) -> Iterator[yaml.Node]:
    """Every node once, children before parents (an alias is the same node object)."""
    done: set[int] = set()
    open_: set[int] = set()  # on the current path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            open_.discard(id(node))
            done.add(id(node))
            yield node
            continue
        if id(node) in done:
            continue
        if id(node) in open_:
            raise _Problem("an alias refers to a value that contains it (a recursive alias)", node.start_mark)
        open_.add(id(node))
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            stack += [(n, False) for pair in node.value for n in pair]
        elif isinstance(node, yaml.SequenceNode):
            stack += [(n, False) for n in node.value]
