"""Image recipes: discovery, build order, build contexts and content hashes (no Docker).

Image directories are discovered (``images/<name>/Dockerfile``) and the parent is
read from the ``FROM`` line, so adding an MTA image needs no code change. Each image
is hashed over its inputs (Dockerfile, context files, suite) chained with its
parent's hash; the build context is written as a reproducible tar.
"""

from __future__ import annotations

import graphlib
import hashlib
import io
import json
import os
import re
import tarfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from . import resources
from .debianrecipe import debian_recipe_data, registry_dockerfile, registry_files, registry_recipe_data
from .imagenames import DEBIAN_IMAGE, IMAGE_PREFIX, ImageError, image_prefix
from .imagesource import BaseSource

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DOCKERFILE_FROM_RE = re.compile(rf"^(\s*FROM\s+(?:--\S+\s+)*){IMAGE_PREFIX}/", re.IGNORECASE | re.MULTILINE)
_FROM_RE = re.compile(
    rf"^{IMAGE_PREFIX}/(?P<name>[a-z0-9][a-z0-9_.-]*):(?:\$\{{SUITE\}}|\$SUITE)$"
)
_SKIP_NAMES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".git"})
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp")


@dataclass(frozen=True)
class ImageRecipe:
    """How to make one image: its directory, parent and extra context paths.

    ``debian`` is the only recipe without a directory: it is pulled or debootstrapped.
    """

    name: str
    parent: str | None
    directory: Path | None = None
    context_root: Path | None = None
    extra_paths: tuple[str, ...] = ()

    @property
    def is_rootfs(self) -> bool:
        return self.name == DEBIAN_IMAGE


@dataclass(frozen=True)
class ContextEntry:
    """One file of a build context: where it goes (``arcname``) and where it comes from."""

    arcname: str
    source: Path
    mode: int


# ----------------------------------------------------------------------- discovery


def _logical_lines(text: str) -> Iterator[str]:
    """Dockerfile lines with comments dropped and ``\\`` continuations joined."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def parse_parent(dockerfile_text: str) -> str:
    """The ``testbed/<parent>`` image named by the Dockerfile's FROM line.

    A hand-written check rather than a Dockerfile parser: the recipe format is ours and
    narrow on purpose (``ARG SUITE`` then ``FROM testbed/<parent>:${SUITE}``), because
    nothing else can be built without a registry.
    """
    saw_arg_suite = False
    for line in _logical_lines(dockerfile_text):
        words = line.split()
        instr = words[0].upper()
        if instr == "ARG" and len(words) > 1 and words[1].split("=")[0] == "SUITE":
            saw_arg_suite = True
        elif instr == "FROM":
            ref = next((w for w in words[1:] if not w.startswith("--")), "")
            match = _FROM_RE.match(ref)
            if not match:
                raise ImageError(
                    f"FROM {ref!r}: must be {IMAGE_PREFIX}/<image>:${{SUITE}} "
                    "(builds never pull: parents are local testbed images)"
                )
            if not saw_arg_suite:
                raise ImageError("the Dockerfile must declare 'ARG SUITE' before FROM")
            return match["name"]
        elif instr != "ARG":
            break
    raise ImageError(f"no FROM {IMAGE_PREFIX}/<image>:${{SUITE}} line at the top")


def _read_context_list(path: Path) -> tuple[str, ...]:
    """Paths from ``context.txt``: one per line, ``#`` comments, blank lines ignored."""
    if not path.is_file():
        return ()
    entries = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return tuple(e for e in entries if e)


def _check_extra_path(entry: str, context_root: Path) -> str | None:
    """Why a context.txt entry is unusable, or None if it is fine."""
    rel = Path(entry)
    if rel.is_absolute() or ".." in rel.parts:
        return f"{entry!r} must be relative to the directory holding the testbed package, without '..'"
    if not (context_root / rel).exists():
        return f"{entry!r} does not exist under {context_root}"
    return None


def _load_recipe(directory: Path, context_root: Path) -> tuple[ImageRecipe | None, list[str]]:
    """One image directory -> recipe, or the list of problems found in it."""
    name = directory.name
    problems = []
    if not _NAME_RE.match(name):
        problems.append(f"{name}: not a valid image name (lower-case letters, digits, _.-)")
    if name == DEBIAN_IMAGE:
        problems.append(f"{name}: reserved for the base image (pulled or debootstrapped); pick another name")
    parent = None
    try:
        parent = parse_parent((directory / "Dockerfile").read_text())
    except ImageError as exc:
        problems.append(f"{directory / 'Dockerfile'}: {exc}")
    extra = _read_context_list(directory / "context.txt")
    for entry in extra:
        why = _check_extra_path(entry, context_root)
        if why:
            problems.append(f"{directory / 'context.txt'}: {why}")
    if problems:
        return None, problems
    norm = tuple(Path(e).as_posix().rstrip("/") for e in extra)
    return ImageRecipe(name, parent, directory, context_root, norm), []


def discover_images(images_dir: Path, context_root: Path | None = None) -> dict[str, ImageRecipe]:
    """Every ``images/<name>/Dockerfile`` is an image; ``debian`` is always present.

    ``context_root`` is where ``context.txt`` paths are found (default: the directory
    holding ``images_dir``, a repository's layout; resources.context_root() for the
    bundled recipes). All problems (bad FROM lines, unknown parents, missing context
    paths, cycles) are collected and raised together, so one run shows everything to fix.
    """
    images_dir = Path(images_dir).resolve()
    if not images_dir.is_dir():
        raise ImageError(f"images directory {images_dir} does not exist")
    context_root = Path(context_root).resolve() if context_root else images_dir.parent
    recipes = {DEBIAN_IMAGE: ImageRecipe(DEBIAN_IMAGE, None)}
    problems: list[str] = []
    for directory in sorted(p for p in images_dir.iterdir() if (p / "Dockerfile").is_file()):
        recipe, found = _load_recipe(directory, context_root)
        problems += found
        if recipe:
            recipes[recipe.name] = recipe
    for r in recipes.values():
        if r.parent is not None and r.parent not in recipes:
            problems.append(f"{r.name}: parent image {r.parent!r} is not in {images_dir}")
    if not problems:
        problems += _cycle_problems(recipes)
    if problems:
        raise ImageError("bad image recipes:\n  " + "\n  ".join(problems))
    return recipes


def bundled_recipes() -> dict[str, ImageRecipe]:
    """The package's own image recipes (or ``TESTBED_IMAGES_DIR``'s), found through resources."""
    return discover_images(resources.images_dir(), resources.context_root())


def _cycle_problems(recipes: Mapping[str, ImageRecipe]) -> list[str]:
    try:
        _sorter(recipes, recipes.keys()).prepare()
    except graphlib.CycleError as exc:
        return [f"images depend on each other in a cycle: {' -> '.join(exc.args[1])}"]
    return []


def _closure(recipes: Mapping[str, ImageRecipe], names: Iterable[str]) -> set[str]:
    """The requested images and all their ancestors."""
    wanted: set[str] = set()
    for name in names:
        current: str | None = name
        while current is not None and current not in wanted:
            wanted.add(current)
            current = recipes[current].parent
    return wanted


def _sorter(recipes: Mapping[str, ImageRecipe], names: Iterable[str]) -> graphlib.TopologicalSorter[str]:
    graph: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for name in sorted(names):
        parent = recipes[name].parent
        graph.add(name, *([parent] if parent else []))
    return graph


def resolve_order(recipes: Mapping[str, ImageRecipe], names: Iterable[str] | None = None) -> list[str]:
    """Requested images plus ancestors, parents first (debian -> base -> the rest)."""
    names = list(recipes) if names is None else list(names)
    unknown = sorted(set(names) - set(recipes))
    if unknown:
        raise ImageError(f"unknown image(s) {', '.join(unknown)}; known: {', '.join(sorted(recipes))}")
    return list(_sorter(recipes, _closure(recipes, names)).static_order())


# ------------------------------------------------------------- context and hashes


def _normal_mode(path: Path) -> int:
    """0755 or 0644: only the executable bit is meaningful; umask differences are not."""
    return 0o755 if path.stat().st_mode & 0o111 else 0o644


def _walk_files(root: Path) -> Iterator[Path]:
    """Regular files below ``root`` in sorted order, without caches and editor junk."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_NAMES)
        for fname in sorted(filenames):
            path = Path(dirpath, fname)
            if fname.endswith(_SKIP_SUFFIXES) or not path.is_file():
                continue
            yield path


def _entries_under(base: Path, start: Path) -> Iterator[ContextEntry]:
    """Entries for a file or directory ``start``, named relative to ``base``."""
    files = [start] if start.is_file() else _walk_files(start)
    for path in files:
        yield ContextEntry(path.relative_to(base).as_posix(), path, _normal_mode(path))


def context_entries(recipe: ImageRecipe) -> list[ContextEntry]:
    """Every file of the image's build context, sorted by its name in the context.

    The image directory lands at the context root; ``context.txt`` paths keep their
    path relative to the recipe's ``context_root``, so the hash names no absolute path.
    A name claimed twice is an error, not a silent overwrite.
    """
    if recipe.directory is None or recipe.context_root is None:
        raise ImageError(f"{recipe.name} has no build context (it is pulled or debootstrapped)")
    entries: dict[str, ContextEntry] = {}
    sources = [(recipe.directory, recipe.directory)]
    sources += [(recipe.context_root, recipe.context_root / p) for p in recipe.extra_paths]
    for base, start in sources:
        for entry in _entries_under(base, start):
            other = entries.get(entry.arcname)
            if other and other.source != entry.source:
                raise ImageError(
                    f"{recipe.name}: context path {entry.arcname} comes from both "
                    f"{other.source} and {entry.source}"
                )
            entries[entry.arcname] = entry
    return [entries[k] for k in sorted(entries)]


def _file_digest(path: Path) -> bytes:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").digest()


def content_hash(recipe: ImageRecipe, suite: str, parent_hash: str | None,
                 base: BaseSource | None = None) -> str:
    """sha256 over the image's own inputs and its parent's hash (so changes propagate).

    For ``debian`` the inputs are its source (``base``; None = debootstrap). The
    debootstrap data is unchanged since before registries, so those images stay current.
    """
    h = hashlib.sha256()
    if recipe.is_rootfs and base is not None and base.is_registry:
        h.update(b"testbed-debian-registry\0")
        h.update(json.dumps(registry_recipe_data(suite, base), sort_keys=True).encode())
    elif recipe.is_rootfs:
        h.update(b"testbed-debian\0")
        h.update(json.dumps(debian_recipe_data(suite), sort_keys=True).encode())
    else:
        h.update(f"testbed-image\0suite={suite}\0parent={parent_hash}\0".encode())
        for entry in context_entries(recipe):
            h.update(f"{entry.arcname}\0{entry.mode:o}\0".encode())
            h.update(_file_digest(entry.source))
    return h.hexdigest()


def content_hashes(recipes: Mapping[str, ImageRecipe], names: Iterable[str] | None, suite: str,
                   base: BaseSource | None = None) -> dict[str, str]:
    """Hashes for ``names`` and their ancestors, computed parents first."""
    hashes: dict[str, str] = {}
    for name in resolve_order(recipes, names):
        parent = recipes[name].parent
        hashes[name] = content_hash(recipes[name], suite, hashes.get(parent) if parent else None, base)
    return hashes


def _add_tar_member(tar: tarfile.TarFile, arcname: str, data: bytes, mode: int) -> None:
    """One file with a fixed owner and mtime, so equal inputs give equal tars."""
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mode = mode
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def with_image_prefix(dockerfile: bytes, prefix: str) -> bytes:
    """Point ``FROM testbed/<parent>`` at the configured prefix's parent."""
    if prefix == IMAGE_PREFIX:
        return dockerfile
    return _DOCKERFILE_FROM_RE.sub(lambda m: f"{m[1]}{prefix}/", dockerfile.decode()).encode()


def write_context_tar(recipe: ImageRecipe, fileobj: IO[bytes]) -> None:
    """The build context as a reproducible tar (fixed owner, mtime and modes)."""
    prefix = image_prefix()
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        for entry in context_entries(recipe):
            data = entry.source.read_bytes()
            if entry.arcname == "Dockerfile":
                data = with_image_prefix(data, prefix)
            _add_tar_member(tar, entry.arcname, data, entry.mode)


def write_registry_context(pulled_id: str, fileobj: IO[bytes]) -> None:
    """The context of the build on top of a pulled image: its Dockerfile and rootfs files."""
    with tarfile.open(fileobj=fileobj, mode="w") as tar:
        _add_tar_member(tar, "Dockerfile", registry_dockerfile(pulled_id).encode(), 0o644)
        for rel, (content, mode) in registry_files().items():
            _add_tar_member(tar, f"rootfs/{rel}", content.encode(), mode)
