"""Image pipeline: build the lab's Docker images, from a registry's Debian or debootstrap.

Why it looks like this:

* The root of every image is ``testbed/debian:<suite>``, made from one of two sources
  (chosen in ``testbed.imagesource``): ``debian:<suite>`` pulled from a registry, with
  the testbed's apt settings and packages added by a small build; or, where no
  registry is reachable, a ``debootstrap --variant=minbase`` rootfs streamed into
  ``docker import``. Every other image is a classic-builder ``docker build`` FROM a
  local ``testbed/*`` image, run with the host's network so ``RUN apt-get`` reaches
  the image's Debian mirror.
* For debootstrap the mirror is read from the host's apt sources at run time (or
  ``TESTBED_MIRROR``): mirrors differ between machines and must never be written into
  the code. A pulled image keeps its own apt sources.
* Builds are skipped when nothing changed: each image carries a label with a hash of
  its inputs (Dockerfile, context files, suite) chained with its parent's hash, so a
  no-op ``ensure_images`` costs a few ``inspect`` calls. The mirror is not hashed:
  another mirror serves the same packages.
* Images whose parents exist build side by side (``testbed.buildgraph``): every
  image FROM base at once, up to ``TESTBED_BUILD_JOBS`` (default 4) builds.
* Image directories are discovered (``images/<name>/Dockerfile``) and the parent is
  read from the ``FROM`` line, so adding an MTA image needs no code change here.
"""

from __future__ import annotations

import contextlib
import fcntl
import graphlib
import hashlib
import io
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple

import docker
import docker.errors

from .buildgraph import DEFAULT_WORKERS, Cancelled, JobsFailed, run_graph
from .errors import TestbedError
from .owner import LABEL_PROCESS, lab_state, process_label
from .imagesource import (
    REGISTRY_TIMEOUT,
    BaseSettings,
    BaseSource,
    ImageSourceError,
    RegistryFailure,
    SourceKind,
    classify_registry_error,
    debootstrap_unavailable_message,
    offline_source,
    recorded_source,
    settings_from_env,
    source_after_probe,
    sudo_hint,
)

log = logging.getLogger(__name__)

IMAGE_PREFIX = "testbed"
# Another prefix keeps a test's or an experiment's images apart from everyone's
# testbed/* images on a shared engine. Dockerfiles still say FROM testbed/<parent>.
ENV_PREFIX = "TESTBED_IMAGE_PREFIX"
# Builds run at once (siblings only: a child waits for its parent). Each build is
# mostly apt downloads and dpkg, so a few overlap well even on two cores.
ENV_BUILD_JOBS = "TESTBED_BUILD_JOBS"
from .adapters.registry import SUITES  # noqa: E402 - the adapters are the source

# Suites the builder also knows, for images that are not lab hosts: forky's
# docker.io is the current engine `testbed engine` runs nested.
EXTRA_BUILD_SUITES = ("forky",)
DEFAULT_SUITE = "bookworm"
DEBIAN_IMAGE = "debian"

LABEL_HASH = "testbed.content-hash"
LABEL_IMAGE = "testbed.image"
LABEL_SUITE = "testbed.suite"

# Everything a lab host needs for network work is in the rootfs itself, so routers
# can run testbed/base without any install step. dig comes from bind9-dnsutils: in
# trixie "dnsutils" is only a virtual package, which debootstrap cannot resolve.
DEBOOTSTRAP_PACKAGES = (
    "bind9-dnsutils",
    "ca-certificates",
    "iproute2",
    "iptables",
    "iputils-ping",
    "netcat-openbsd",
    "procps",
    "tcpdump",
)

# Bump when the rootfs recipe changes in code (not in the data below, which is
# hashed anyway), so existing testbed/debian images are rebuilt.
DEBIAN_RECIPE_VERSION = "1"
# The same for the build on top of a pulled debian image (its Dockerfile is hashed).
REGISTRY_RECIPE_VERSION = "1"

# Files written into the rootfs after debootstrap: (content, mode).
ROOTFS_FILES: Mapping[str, tuple[str, int]] = {
    # Small, predictable installs in every later `RUN apt-get install`; no .deb or
    # pkgcache.bin left behind in image layers (the same idea as Docker's debian images).
    "etc/apt/apt.conf.d/90testbed": (
        'APT::Install-Recommends "false";\n'
        'APT::Install-Suggests "false";\n'
        'APT::Keep-Downloaded-Packages "false";\n'
        'Acquire::Languages "none";\n'
        'Acquire::Retries "3";\n'
        'Dir::Cache::pkgcache "";\n'
        'Dir::Cache::srcpkgcache "";\n',
        0o644,
    ),
    # Later package installs skip docs, man pages and translations as well.
    "etc/dpkg/dpkg.cfg.d/90testbed-nodoc": (
        "path-exclude=/usr/share/doc/*\n"
        "path-exclude=/usr/share/man/*\n"
        "path-exclude=/usr/share/info/*\n"
        "path-exclude=/usr/share/locale/*\n"
        "path-exclude=/usr/share/lintian/*\n",
        0o644,
    ),
    # Package scripts must not start daemons inside `docker build` containers;
    # the lab starts its services itself (tb-init / adapters), not via invoke-rc.d.
    "usr/sbin/policy-rc.d": ("#!/bin/sh\n# testbed: no daemons started by package scripts\nexit 101\n", 0o755),
    # Docker bind-mounts its own copies at run time; the build host's must not leak in.
    "etc/resolv.conf": ("", 0o644),
    "etc/hostname": ("", 0o644),
}
# Files the engine provides in every container (and build step) itself: a pulled
# image gets none of them from us.
ENGINE_MANAGED_FILES = frozenset({"etc/resolv.conf", "etc/hostname"})

# Removed from the rootfs before import (globs relative to the rootfs).
ROOTFS_PRUNE = (
    "var/lib/apt/lists/*",
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/cache/debconf/*-old",
    "var/lib/dpkg/*-old",
    "var/log/*.log",
    "var/log/apt/*",
    "usr/share/doc/*",
    "usr/share/man/*",
    "usr/share/info/*",
    "usr/share/locale/*",
    "usr/share/lintian/*",
)

DEBIAN_IMAGE_CHANGES = ('CMD ["/bin/bash"]', "ENV LANG=C.UTF-8")

# Docker's read timeout for our own client: a quiet `RUN` step or a large import
# can take minutes without a byte on the socket.
DOCKER_TIMEOUT = 3600
LOG_TAIL_LINES = 30
# Builds kept per image and suite (see cache_tag): enough for two or three checkouts.
CACHE_KEEP = 3

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_PREFIX_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_DOCKERFILE_FROM_RE = re.compile(rf"^(\s*FROM\s+(?:--\S+\s+)*){IMAGE_PREFIX}/", re.IGNORECASE | re.MULTILINE)
_FROM_RE = re.compile(
    rf"^{IMAGE_PREFIX}/(?P<name>[a-z0-9][a-z0-9_.-]*):(?:\$\{{SUITE\}}|\$SUITE)$"
)
_SKIP_NAMES = frozenset({"__pycache__", ".pytest_cache", ".mypy_cache", ".git"})
_SKIP_SUFFIXES = (".pyc", ".pyo", "~", ".swp")

ProgressCallback = Callable[[str, str], None]
"""``progress(image_name, message)``: one call per status change or build-log line."""


class ImageError(TestbedError):
    """The image pipeline cannot do its job (setup problem or bad image recipe)."""


class DebootstrapUnavailable(ImageError):
    """debootstrap cannot run on this machine (no root, not installed, no mirror)."""


class ImageBuildsFailed(ImageError):
    """Several builds running side by side failed; each one's message is kept."""

    def __init__(self, failures: Mapping[str, ImageError], not_built: Iterable[str]) -> None:
        self.failures = dict(failures)
        self.not_built = list(not_built)
        parts = [f"{len(self.failures)} image builds failed:"]
        parts += [f"[{name}] {exc}" for name, exc in self.failures.items()]
        if self.not_built:
            parts.append(f"not built (stopped or waiting on a failed parent): {', '.join(self.not_built)}")
        super().__init__("\n".join(parts))


class ImageBuildError(ImageError):
    """A build ran and failed; carries the tail of its output for the user."""

    def __init__(self, image: str, suite: str, log_tail: Iterable[str], reason: str = "") -> None:
        self.image = image
        self.suite = suite
        self.log_tail = list(log_tail)
        self.reason = reason
        head = f"building {image_tag(image, suite)} failed" + (f": {reason}" if reason else "")
        body = "\n".join(self.log_tail)
        super().__init__(f"{head}\n--- last {len(self.log_tail)} lines of output ---\n{body}")


@dataclass(frozen=True)
class ImageRecipe:
    """How to make one image: its directory, parent and extra context paths.

    ``debian`` is the only recipe without a directory: it is pulled or debootstrapped.
    """

    name: str
    parent: str | None
    directory: Path | None = None
    repo_root: Path | None = None
    extra_paths: tuple[str, ...] = ()

    @property
    def is_rootfs(self) -> bool:
        return self.name == DEBIAN_IMAGE


class ImageStatus(NamedTuple):
    name: str
    tag: str
    present: bool
    up_to_date: bool


@dataclass(frozen=True)
class ContextEntry:
    """One file of a build context: where it goes (``arcname``) and where it comes from."""

    arcname: str
    source: Path
    mode: int


@dataclass(frozen=True)
class DebianMirror:
    """The Debian archive the images install from, as found in the host's apt sources."""

    url: str
    security_url: str | None = None
    updates: bool = False
    origin: str = ""

    def sources_list(self, suite: str) -> str:
        """The image's /etc/apt/sources.list: same mirror as the host, the image's suite."""
        lines = [f"deb {self.url} {suite} main"]
        if self.updates:
            lines.append(f"deb {self.url} {suite}-updates main")
        if self.security_url:
            lines.append(f"deb {self.security_url} {suite}-security main")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class AptSource:
    """One entry of the host's apt sources (either format)."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...] = ()
    enabled: bool = True
    signed_by: str = ""
    origin: str = ""


# --------------------------------------------------------------------------- names


def image_prefix() -> str:
    """``testbed``, or ``TESTBED_IMAGE_PREFIX`` (read each time: tests set it per test)."""
    prefix = os.environ.get(ENV_PREFIX) or IMAGE_PREFIX
    if not _PREFIX_RE.match(prefix):
        raise ImageError(f"{ENV_PREFIX}={prefix!r}: use lower-case letters, digits and single . _ - (e.g. testbed-try)")
    return prefix


def image_tag(name: str, suite: str) -> str:
    """``testbed/<name>:<suite>``: the suite is the tag so both suites coexist."""
    return f"{image_prefix()}/{name}:{suite}"


def default_images_dir() -> Path:
    """The repository's ``images/`` (override with ``TESTBED_IMAGES_DIR``)."""
    env = os.environ.get("TESTBED_IMAGES_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "images"


def _check_suite(suite: str) -> None:
    if suite not in (*SUITES, *EXTRA_BUILD_SUITES):
        raise ImageError(f"unknown suite {suite!r}; supported: {', '.join((*SUITES, *EXTRA_BUILD_SUITES))}")


# ---------------------------------------------------------------- apt sources / mirror

# Debian suite names the mirror search recognises, on top of distro-info's list.
_DEBIAN_SUITES = frozenset(
    {"buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "experimental",
     "oldoldstable", "oldstable", "stable", "testing", "unstable", *SUITES}
)
_MIRROR_SCHEMES = ("http://", "https://", "ftp://", "file:/")


def parse_one_line_sources(text: str, origin: str = "") -> list[AptSource]:
    """Parse the classic ``deb [opts] URI SUITE COMPONENT...`` format."""
    sources = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        options = ""
        match = re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line)
        if match:
            kind, options, rest = match.groups()
            words = [kind, *rest.split()]
        else:
            words = line.split()
        if len(words) < 3:
            continue
        opts = dict(o.split("=", 1) for o in options.split() if "=" in o)
        sources.append(
            AptSource(
                types=(words[0],),
                uris=(words[1],),
                suites=(words[2],),
                components=tuple(words[3:]),
                signed_by=opts.get("signed-by", ""),
                origin=origin,
            )
        )
    return sources


def _deb822_paragraphs(text: str) -> Iterator[dict[str, str]]:
    """Yield the stanzas of a deb822 file as {lower-case field: value}."""
    fields: dict[str, str] = {}
    key = None
    for raw in text.splitlines():
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if fields:
                yield fields
            fields, key = {}, None
        elif raw[0] in " \t" and key:
            fields[key] += "\n" + raw.strip()
        elif ":" in raw:
            key, value = raw.split(":", 1)
            key = key.strip().lower()
            fields[key] = value.strip()
    if fields:
        yield fields


def parse_deb822_sources(text: str, origin: str = "") -> list[AptSource]:
    """Parse the ``.sources`` (deb822) format."""
    sources = []
    for para in _deb822_paragraphs(text):
        sources.append(
            AptSource(
                types=tuple(para.get("types", "").split()),
                uris=tuple(para.get("uris", "").split()),
                suites=tuple(para.get("suites", "").split()),
                components=tuple(para.get("components", "").split()),
                enabled=para.get("enabled", "yes").strip().lower() not in ("no", "false", "0"),
                signed_by=para.get("signed-by", ""),
                origin=origin,
            )
        )
    return sources


def read_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    """All entries apt itself would read (``sources.list``, ``*.list``, ``*.sources``)."""
    files = [etc_apt / "sources.list"]
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.suffix in (".list", ".sources"))
    sources: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        parse = parse_deb822_sources if path.suffix == ".sources" else parse_one_line_sources
        sources += parse(text, origin=str(path))
    return sources


def _known_debian_suites() -> frozenset[str]:
    """Debian codenames: built-in list plus distro-info's, so new releases are found."""
    names = set(_DEBIAN_SUITES)
    with contextlib.suppress(OSError):
        for line in Path("/usr/share/distro-info/debian.csv").read_text().splitlines()[1:]:
            cols = line.split(",")
            if len(cols) > 2:
                names.add(cols[2].strip())
    return frozenset(names)


def _suite_base(suite: str) -> str:
    """``bookworm-updates`` -> ``bookworm``; ``bullseye/updates`` -> ``bullseye``."""
    return re.split(r"[-/]", suite, maxsplit=1)[0]


def _is_security_suite(suite: str) -> bool:
    return suite.endswith("-security") or suite.endswith("/updates")


def _is_debian_source(src: AptSource, known: frozenset[str]) -> bool:
    """A usable Debian archive entry: binary, enabled, Debian suites, a fetchable URI."""
    if "deb" not in src.types or not src.enabled or not src.uris:
        return False
    if not any(u.startswith(_MIRROR_SCHEMES) for u in src.uris):
        return False
    return "debian-archive-keyring" in src.signed_by or any(
        _suite_base(s) in known for s in src.suites
    )


def _first_uri(src: AptSource) -> str:
    return next(u for u in src.uris if u.startswith(_MIRROR_SCHEMES)).rstrip("/")


def select_mirror(sources: Iterable[AptSource], override: str | None = None,
                  security_override: str | None = None) -> DebianMirror:
    """Pick the Debian archive (and security archive, if any) from parsed sources.

    ``override`` (``TESTBED_MIRROR``) replaces the archive; ``security_override``
    (``TESTBED_SECURITY_MIRROR``; empty string = none) replaces the security archive.
    """
    known = _known_debian_suites()
    debian = [s for s in sources if _is_debian_source(s, known)]
    main = [s for s in debian if any(not _is_security_suite(x) for x in s.suites)]
    security = [s for s in debian if any(_is_security_suite(x) for x in s.suites)]
    if override:
        url, origin, updates = override.rstrip("/"), "TESTBED_MIRROR", True
    elif main:
        url, origin = _first_uri(main[0]), main[0].origin
        updates = any(x.endswith("-updates") for s in main for x in s.suites)
    else:
        raise DebootstrapUnavailable(
            "no Debian mirror found in the apt sources (/etc/apt/sources.list, "
            "/etc/apt/sources.list.d/*.list|*.sources); set TESTBED_MIRROR=<url> "
            "to the Debian archive URL to use"
        )
    if security_override is not None:
        sec = security_override.rstrip("/") or None
    else:
        sec = _first_uri(security[0]) if security else None
    return DebianMirror(url=url, security_url=sec, updates=updates, origin=origin)


def find_mirror(etc_apt: Path = Path("/etc/apt")) -> DebianMirror:
    """The mirror to build from: env overrides first, then the host's apt sources."""
    return select_mirror(
        read_apt_sources(etc_apt),
        override=os.environ.get("TESTBED_MIRROR") or None,
        security_override=os.environ.get("TESTBED_SECURITY_MIRROR"),
    )


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


def _check_extra_path(entry: str, repo_root: Path) -> str | None:
    """Why a context.txt entry is unusable, or None if it is fine."""
    rel = Path(entry)
    if rel.is_absolute() or ".." in rel.parts:
        return f"{entry!r} must be relative to the repository root, without '..'"
    if not (repo_root / rel).exists():
        return f"{entry!r} does not exist under {repo_root}"
    return None


def _load_recipe(directory: Path, repo_root: Path) -> tuple[ImageRecipe | None, list[str]]:
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
        why = _check_extra_path(entry, repo_root)
        if why:
            problems.append(f"{directory / 'context.txt'}: {why}")
    if problems:
        return None, problems
    norm = tuple(Path(e).as_posix().rstrip("/") for e in extra)
    return ImageRecipe(name, parent, directory, repo_root, norm), []


def discover_images(images_dir: Path) -> dict[str, ImageRecipe]:
    """Every ``images/<name>/Dockerfile`` is an image; ``debian`` is always present.

    All problems (bad FROM lines, unknown parents, missing context paths, cycles) are
    collected and raised together, so one run shows everything to fix.
    """
    images_dir = Path(images_dir).resolve()
    if not images_dir.is_dir():
        raise ImageError(f"images directory {images_dir} does not exist")
    repo_root = images_dir.parent
    recipes = {DEBIAN_IMAGE: ImageRecipe(DEBIAN_IMAGE, None)}
    problems: list[str] = []
    for directory in sorted(p for p in images_dir.iterdir() if (p / "Dockerfile").is_file()):
        recipe, found = _load_recipe(directory, repo_root)
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
    repository-relative path. A name claimed twice is an error, not a silent overwrite.
    """
    if recipe.directory is None or recipe.repo_root is None:
        raise ImageError(f"{recipe.name} has no build context (it is pulled or debootstrapped)")
    entries: dict[str, ContextEntry] = {}
    sources = [(recipe.directory, recipe.directory)]
    sources += [(recipe.repo_root, recipe.repo_root / p) for p in recipe.extra_paths]
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


def debian_recipe_data(suite: str) -> dict[str, Any]:
    """Everything that defines the rootfs image, except the mirror (same packages anywhere)."""
    return {
        "recipe_version": DEBIAN_RECIPE_VERSION,
        "suite": suite,
        "variant": "minbase",
        "include": sorted(DEBOOTSTRAP_PACKAGES),
        "files": {k: [v[0], oct(v[1])] for k, v in sorted(ROOTFS_FILES.items())},
        "prune": list(ROOTFS_PRUNE),
        "changes": list(DEBIAN_IMAGE_CHANGES),
    }


def registry_files() -> dict[str, tuple[str, int]]:
    """The rootfs files a pulled image gets (the engine provides the rest itself)."""
    return {k: v for k, v in sorted(ROOTFS_FILES.items()) if k not in ENGINE_MANAGED_FILES}


def registry_dockerfile(pulled_id: str) -> str:
    """The build on top of a pulled debian image: what debootstrap's rootfs has, via apt.

    FROM the image id, not the tag: the build uses exactly the image that was hashed,
    even if the tag moves meanwhile. Packages come from the image's own apt sources.
    """
    prune = " ".join(f"/{pattern}" for pattern in ROOTFS_PRUNE)
    return "\n".join([
        f"FROM {pulled_id}",
        "COPY rootfs/ /",
        "RUN apt-get update \\",
        " && DEBIAN_FRONTEND=noninteractive apt-get install -y " + " ".join(sorted(DEBOOTSTRAP_PACKAGES)) + " \\",
        f" && rm -rf {prune}",
        *DEBIAN_IMAGE_CHANGES,
        "",
    ])


def registry_recipe_data(suite: str, source: BaseSource) -> dict[str, Any]:
    """Everything that defines the debian image made from a pull, the pulled image's id included."""
    return {
        "recipe_version": REGISTRY_RECIPE_VERSION,
        "suite": suite,
        "reference": source.reference,
        "pulled_id": source.pulled_id,
        "dockerfile": registry_dockerfile(source.pulled_id or ""),
        "files": {k: [v[0], oct(v[1])] for k, v in registry_files().items()},
    }


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


# --------------------------------------------------------------------- docker side


def _no_progress(_image: str, _message: str) -> None:
    pass


def docker_client() -> docker.DockerClient:
    """A client with a long read timeout (quiet build steps) and the engine's own API version."""
    try:
        return docker.from_env(timeout=DOCKER_TIMEOUT)
    except docker.errors.DockerException as exc:
        raise ImageError(f"cannot reach the Docker engine: {exc}") from exc


def _inspect(client: docker.DockerClient, tag: str) -> dict[str, Any] | None:
    try:
        attrs: dict[str, Any] = client.api.inspect_image(tag)
        return attrs
    except docker.errors.ImageNotFound:
        return None


def _labels_of(attrs: Mapping[str, Any] | None) -> dict[str, str]:
    return ((attrs or {}).get("Config") or {}).get("Labels") or {}


def _label(attrs: Mapping[str, Any] | None, key: str) -> str | None:
    return _labels_of(attrs).get(key)


def _recorded_base(client: docker.DockerClient, suite: str) -> BaseSource | None:
    """The registry image the current testbed/debian was built on, if it was."""
    return recorded_source(_labels_of(_inspect(client, image_tag(DEBIAN_IMAGE, suite))))


def _labels(name: str, suite: str, digest: str) -> dict[str, str]:
    return {LABEL_HASH: digest, LABEL_IMAGE: name, LABEL_SUITE: suite}


def _lock_path() -> Path:
    """~/.cache/testbed/images.lock, or a per-user file in /tmp if the home is read-only.

    Another image prefix has a lock of its own: it shares no tag with testbed/*, so a
    benchmark's cold build need not wait for (or hold up) everyone else's builds.
    """
    prefix = image_prefix()
    name = "images.lock" if prefix == IMAGE_PREFIX else f"images-{prefix}.lock"
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "testbed"
    try:
        base.mkdir(parents=True, exist_ok=True)
        return base / name
    except OSError:
        return Path(tempfile.gettempdir()) / f"testbed-{name[:-5]}-{os.getuid()}.lock"


@contextlib.contextmanager
def build_lock(progress: ProgressCallback = _no_progress) -> Iterator[None]:
    """Serialise ensure_images across processes: two builds of one tag would race."""
    path = _lock_path()
    with open(path, "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress("*", f"waiting for another testbed process building images (lock {path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield  # closing the file releases the lock


def _emit(name: str, text: str, tail: deque[str], progress: ProgressCallback) -> None:
    for line in text.splitlines():
        if line.strip():
            tail.append(line.rstrip())
            progress(name, line.rstrip())


def _follow_build(stream: Iterable[dict[str, Any]], name: str, suite: str,
                  progress: ProgressCallback, failure: str = "the Dockerfile step failed",
                  stop: threading.Event | None = None) -> str | None:
    """Relay a build (or pull) log; return the image id, raise ImageBuildError on an error chunk.

    When ``stop`` is set (a sibling failed, Ctrl-C) the stream is closed at the next
    line: the engine sees the client go and cancels the build, which never tags.
    """
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    image_id = None
    try:
        for chunk in stream:
            if "error" in chunk:  # a failure that happened is reported, stop or not
                _emit(name, str(chunk["error"]), tail, progress)
                raise ImageBuildError(name, suite, tail, failure)
            if stop is not None and stop.is_set():
                progress(name, "build stopped")
                raise Cancelled(name)
            _emit(name, str(chunk.get("stream") or chunk.get("status") or ""), tail, progress)
            image_id = (chunk.get("aux") or {}).get("ID", image_id)
    except (docker.errors.DockerException, OSError) as exc:  # engine gone, timeouts
        raise ImageBuildError(name, suite, tail, f"{type(exc).__name__}: {exc}") from exc
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()  # drops the response, so an abandoned build's connection goes now
    return image_id


def _run_build(client: docker.DockerClient, name: str, suite: str, write_context: Callable[[IO[bytes]], None],
               labels: dict[str, str], nocache: bool, progress: ProgressCallback,
               stop: threading.Event | None = None) -> str:
    """Classic-builder build of one context, host network, no pulls; returns the image id."""
    tag = image_tag(name, suite)
    with tempfile.TemporaryFile() as ctx:
        write_context(ctx)
        ctx.seek(0)
        try:
            stream = client.api.build(
                fileobj=ctx, custom_context=True, tag=tag, buildargs={"SUITE": suite},
                network_mode="host", labels=labels, rm=True, forcerm=True, pull=False,
                nocache=nocache, decode=True,
            )
        except docker.errors.DockerException as exc:
            raise ImageBuildError(name, suite, [], str(exc)) from exc
        image_id = _follow_build(stream, name, suite, progress, stop=stop)
    attrs = _inspect(client, tag)
    if attrs is None or (image_id and attrs["Id"] != image_id):
        raise ImageBuildError(name, suite, [], f"the engine reported success but {tag} is missing")
    return str(attrs["Id"])


def _build_dockerfile(client: docker.DockerClient, recipe: ImageRecipe, suite: str,
                      labels: dict[str, str], nocache: bool, progress: ProgressCallback,
                      stop: threading.Event | None = None) -> str:
    """One image directory (``images/<name>/``) built FROM its local parent."""
    return _run_build(client, recipe.name, suite, partial(write_context_tar, recipe), labels, nocache,
                      progress, stop)


# ------------------------------------------------------------- debian from a registry


@contextlib.contextmanager
def _request_timeout(client: docker.DockerClient, seconds: float) -> Iterator[None]:
    """A shorter read timeout for the calls inside (the client's is an hour, for builds).

    The engine answers a registry question only once the registry did, or its own
    dial gave up, which can take minutes. ``ensure_images`` holds the build lock and
    asks before any build starts (no other thread uses the client yet), so changing
    it for a moment is safe.
    """
    api = client.api
    saved = api.timeout
    api.timeout = seconds
    try:
        yield
    finally:
        api.timeout = saved


def probe_registry(client: docker.DockerClient, reference: str,
                   timeout: float = REGISTRY_TIMEOUT) -> RegistryFailure | None:
    """Ask the engine whether it can get ``reference`` from its registry; None = yes.

    The engine asks the registry (with its own mirrors, proxy and logins), so this is
    the truth for the pull that follows. Only the manifest is fetched: cheap.
    """
    try:
        with _request_timeout(client, timeout):
            client.api.inspect_distribution(reference)
    except docker.errors.APIError as exc:
        return classify_registry_error(reference, exc.status_code, str(exc.explanation or exc))
    except (docker.errors.DockerException, OSError) as exc:  # timeouts, engine gone
        return classify_registry_error(reference, None, f"no answer within {timeout:g} s ({type(exc).__name__})")
    return None


def pull_base(client: docker.DockerClient, reference: str, suite: str, progress: ProgressCallback) -> BaseSource:
    """Pull ``reference`` (quick when it is current) and return it as the base source."""
    repository, tag = reference.rsplit(":", 1)
    progress(DEBIAN_IMAGE, f"pulling {reference}")
    try:
        stream = client.api.pull(repository, tag, stream=True, decode=True)
    except docker.errors.DockerException as exc:
        raise ImageBuildError(DEBIAN_IMAGE, suite, [], f"pulling {reference} failed: {exc}") from exc
    _follow_build(stream, DEBIAN_IMAGE, suite, progress, failure=f"pulling {reference} failed")
    attrs = _inspect(client, reference)
    if attrs is None:
        raise ImageBuildError(DEBIAN_IMAGE, suite, [], f"the engine reported success but {reference} is missing")
    return BaseSource.registry(reference, str(attrs["Id"]))


def choose_base_source(client: docker.DockerClient, settings: BaseSettings, suite: str,
                       progress: ProgressCallback) -> BaseSource:
    """Registry if the engine can pull the reference, else what ``settings`` allow."""
    reference = settings.reference(suite)
    if settings.source is SourceKind.DEBOOTSTRAP:
        source = BaseSource.debootstrap(reference)
    else:
        failure = probe_registry(client, reference)
        recorded = _recorded_base(client, suite)
        source = source_after_probe(settings, suite, failure, recorded) or pull_base(client, reference, suite, progress)
    progress(DEBIAN_IMAGE, source.describe())
    return source


def _build_from_pulled(client: docker.DockerClient, source: BaseSource, suite: str, labels: dict[str, str],
                       nocache: bool, progress: ProgressCallback) -> str:
    """testbed/debian on top of the pulled image: the same apt settings and packages."""
    assert source.pulled_id is not None
    progress(DEBIAN_IMAGE, f"building on {source.reference} ({source.pulled_id[7:19]})")
    return _run_build(client, DEBIAN_IMAGE, suite, partial(write_registry_context, source.pulled_id),
                      labels, nocache, progress)


def _build_root(client: docker.DockerClient, source: BaseSource, suite: str, labels: dict[str, str],
                nocache: bool, progress: ProgressCallback) -> str:
    """testbed/debian from the chosen source; a debootstrap that cannot run names every fix."""
    labels = {**labels, **source.labels()}
    if source.is_registry:
        return _build_from_pulled(client, source, suite, labels, nocache, progress)
    try:
        return _build_debian(client, suite, labels, progress)
    except DebootstrapUnavailable as exc:
        raise ImageSourceError(debootstrap_unavailable_message(suite, str(exc), source)) from None


# ------------------------------------------------------------------ debian rootfs


def check_rootfs_prerequisites(suite: str) -> None:
    """Fail early, with the fix, when debootstrap cannot run here."""
    if shutil.which("debootstrap") is None:
        raise DebootstrapUnavailable(
            "debootstrap is missing; it builds the testbed/debian base image. "
            "Install it with: apt-get install debootstrap"
        )
    if os.geteuid() != 0:
        raise DebootstrapUnavailable(
            f"building {image_tag(DEBIAN_IMAGE, suite)} needs root: debootstrap creates "
            f"device nodes, chroots and chowns files. Run once as root: {sudo_hint(suite)}"
        )
    if debootstrap_script(suite) is None:
        raise DebootstrapUnavailable(f"this debootstrap does not know {suite!r}; upgrade debootstrap")


DEBOOTSTRAP_SCRIPTS = Path("/usr/share/debootstrap/scripts")


def debootstrap_script(suite: str, scripts: Path = DEBOOTSTRAP_SCRIPTS) -> str | None:
    """The script argument debootstrap needs for ``suite``: "" for its own, None if unusable.

    A debootstrap older than the suite has no script for it; Debian's scripts for
    testing and unstable are one and the same (``sid``), so a suite newer than
    this debootstrap (bookworm's has no ``forky``) is bootstrapped with ``sid``.
    """
    if not scripts.is_dir() or (scripts / suite).exists():
        return ""
    if suite in EXTRA_BUILD_SUITES and (scripts / "sid").exists():
        return str(scripts / "sid")
    return None


def _mounts_below(root: Path) -> list[str]:
    """Mount points inside ``root`` (debootstrap mounts /proc and /sys in the target)."""
    prefix = str(root).rstrip("/") + "/"
    points = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(prefix):
                points.append(point)
    return sorted(points, key=len, reverse=True)


SCRATCH_PREFIX = "testbed-rootfs-"
SCRATCH_OWNER = "testbed-owner"  # inside each scratch directory: the process that made it


def _scratch_base() -> Path:
    return Path(os.environ.get("TESTBED_TMPDIR", "/var/tmp"))


def _remove_scratch(scratch: Path) -> bool:
    """Unmount what is left inside, then remove; False if something stays mounted."""
    for point in _mounts_below(scratch):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    if _mounts_below(scratch):
        log.warning("not removing %s: something is still mounted inside it", scratch)
        return False
    shutil.rmtree(scratch, ignore_errors=True)
    return not scratch.exists()  # not ours to remove (another user's, no permission)


@contextlib.contextmanager
def _scratch_dir() -> Iterator[Path]:
    """A temporary directory for the rootfs, removed only once nothing is mounted in it.

    rmtree across a leftover bind mount would delete the host's files, so leftover
    mounts (debootstrap killed mid-way) are unmounted first and checked again.
    """
    scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=_scratch_base()))
    (scratch / SCRATCH_OWNER).write_text(process_label())
    try:
        yield scratch
    finally:
        _remove_scratch(scratch)


def remove_stale_scratch() -> list[Path]:
    """Rootfs directories of builds whose process is gone (killed debootstrap, SIGKILL): removed.

    A build that is still running (its process is alive) is left alone.
    """
    removed = []
    base = _scratch_base()
    for scratch in sorted(base.glob(f"{SCRATCH_PREFIX}*")) if base.is_dir() else []:
        try:
            owner = (scratch / SCRATCH_OWNER).read_text().strip()
        except OSError:
            owner = ""  # made before owner files existed, or half-written: nobody's
        if lab_state({LABEL_PROCESS: owner}) == "in use":
            continue
        if _remove_scratch(scratch):
            removed.append(scratch)
    return removed


def _stop_process_group(proc: subprocess.Popen[str], grace: float = 20.0) -> None:
    """Make sure debootstrap and its children are gone before the rootfs is removed.

    On Ctrl-C, Popen's context manager waits only 0.25 s, and a SIGINT to the shell
    script alone is deferred until its current child (dpkg, wget) ends: the rootfs
    would be deleted under a live debootstrap. SIGTERM to the group lets debootstrap
    run its exit trap (which unmounts /proc and /sys in the target); SIGKILL after.
    """
    if proc.poll() is None:
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                break
    if proc.stdout:
        proc.stdout.close()


def _run_debootstrap(suite: str, root: Path, mirror: DebianMirror, progress: ProgressCallback) -> None:
    """Run debootstrap, streaming its output; on failure include its own log's tail."""
    cmd = ["debootstrap", "--variant=minbase", "--components=main",
           "--include=" + ",".join(DEBOOTSTRAP_PACKAGES), suite, str(root), mirror.url]
    script = debootstrap_script(suite)
    if script:
        cmd.append(script)
    progress(DEBIAN_IMAGE, "$ " + " ".join(cmd))
    env = {**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"}
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    # Own session: we, not the terminal, decide when it stops (see _stop_process_group).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, text=True, errors="replace", env=env,
                            start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            _emit(DEBIAN_IMAGE, line, tail, progress)
        proc.wait()
    finally:
        _stop_process_group(proc)
    if proc.returncode != 0:
        with contextlib.suppress(OSError):
            detail = (root / "debootstrap" / "debootstrap.log").read_text(errors="replace")
            tail.extend(["--- debootstrap.log ---", *detail.splitlines()[-LOG_TAIL_LINES:]])
        raise ImageBuildError(DEBIAN_IMAGE, suite, tail, f"debootstrap exited with {proc.returncode}")


def _remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def configure_rootfs(root: Path, mirror: DebianMirror, suite: str) -> None:
    """Make the debootstrap tree a container image: apt config, sources, no docs."""
    for rel, (content, mode) in ROOTFS_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(mode)
    (root / "etc/apt/sources.list").write_text(mirror.sources_list(suite))
    for pattern in ROOTFS_PRUNE:
        for path in root.glob(pattern):
            _remove_path(path)


def _import_result_id(text: str) -> str:
    """The image id from the import endpoint's JSON lines (or its error)."""
    image_id = None
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            msg = json.loads(line)
            if msg.get("error"):
                raise ImageError(f"docker import failed: {msg['error']}")
            if str(msg.get("status", "")).startswith("sha256:"):
                image_id = str(msg["status"])
    if image_id is None:
        raise ImageError(f"docker import returned no image id: {text[:200]!r}")
    return image_id


def import_rootfs(client: docker.DockerClient, root: Path, suite: str, labels: Mapping[str, str],
                  progress: ProgressCallback) -> str:
    """Stream ``tar --numeric-owner`` of the rootfs into ``docker import`` (never in memory)."""
    label_change = "LABEL " + " ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    changes = [*DEBIAN_IMAGE_CHANGES, label_change]
    repo = f"{image_prefix()}/{DEBIAN_IMAGE}"
    progress(DEBIAN_IMAGE, f"importing rootfs as {repo}:{suite}")
    cmd = ["tar", "--numeric-owner", "--one-file-system", "-C", str(root), "-c", "."]
    with tempfile.TemporaryFile() as errs, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errs) as tar:
        assert tar.stdout is not None
        chunks = iter(partial(tar.stdout.read, 1 << 20), b"")
        try:
            text = client.api.import_image_from_data(chunks, repository=repo, tag=suite, changes=changes)
        except BaseException as exc:  # engine error or Ctrl-C: tar must not outlive the rootfs
            tar.kill()
            tar.wait()
            if isinstance(exc, docker.errors.DockerException):
                raise ImageBuildError(DEBIAN_IMAGE, suite, [], f"docker import failed: {exc}") from exc
            raise
        tar.wait()
        errs.seek(0)
        if tar.returncode != 0:
            lines = errs.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
            raise ImageBuildError(DEBIAN_IMAGE, suite, lines, f"tar exited with {tar.returncode}")
    return _import_result_id(text)


def _build_debian(client: docker.DockerClient, suite: str, labels: dict[str, str],
                  progress: ProgressCallback) -> str:
    """debootstrap -> configure -> prune -> import. Needs root and debootstrap."""
    check_rootfs_prerequisites(suite)
    mirror = find_mirror()
    progress(DEBIAN_IMAGE, f"mirror {mirror.url} (from {mirror.origin}); security: {mirror.security_url or 'none'}")
    for stale in remove_stale_scratch():
        progress(DEBIAN_IMAGE, f"removed {stale}, left by a build that was killed")
    with _scratch_dir() as scratch:
        root = scratch / "rootfs"
        _run_debootstrap(suite, root, mirror, progress)
        configure_rootfs(root, mirror, suite)
        return import_rootfs(client, root, suite, labels, progress)


# --------------------------------------------------------------------- public API


def cache_tag(name: str, suite: str, digest: str) -> str:
    """``testbed/<name>:<suite>-<hash12>``: keeps each build findable by its inputs.

    Several checkouts (worktrees, CI, a second branch) share one engine and one
    ``testbed/<name>:<suite>`` tag; without this, each would rebuild over the other's
    image on every call. With it, switching back is a retag.
    """
    return f"{image_tag(name, suite)}-{digest[:12]}"


def _retag(client: docker.DockerClient, image_id: str, tag: str) -> None:
    repo, _, name = tag.rpartition(":")
    client.api.tag(image_id, repo, name, force=True)


def prune_cache(client: docker.DockerClient, name: str, suite: str, keep: int = CACHE_KEEP) -> None:
    """Keep the ``keep`` newest tagged builds of one image and suite; drop the rest.

    Untagged builds (their cache tag moved to a forced rebuild) can never be reused,
    so they go too. Images still used by a container or a child image refuse removal;
    they stay until a later prune, which is what we want.
    """
    current = _inspect(client, image_tag(name, suite))
    builds = builds_of(client, name, suite)
    tagged = [b for b in builds if _testbed_tags(b)]
    untagged = [b for b in builds if not _testbed_tags(b)]
    for old in tagged[keep:] + untagged:
        if current and old["Id"] == current["Id"]:
            continue
        for ref in _testbed_tags(old) or [old["Id"]]:
            with contextlib.suppress(docker.errors.APIError):
                client.api.remove_image(ref)


def builds_of(client: docker.DockerClient, name: str, suite: str) -> list[dict[str, Any]]:
    """Every top-level testbed build of one image and suite, newest first."""
    filters = {"label": [f"{LABEL_IMAGE}={name}", f"{LABEL_SUITE}={suite}"]}
    # Images tagged only under another prefix (or pushed and pulled under another
    # name) carry the same labels but are someone else's: leave them out.
    found = [i for i in client.api.images(filters=filters) if _testbed_tags(i) or not _real_tags(i)]
    return sorted(found, key=lambda i: i.get("Created", 0), reverse=True)


def _real_tags(image: Mapping[str, Any]) -> list[str]:
    return [t for t in image.get("RepoTags") or [] if t != "<none>:<none>"]


def _testbed_tags(image: Mapping[str, Any]) -> list[str]:
    """The image's testbed/* tags (removing by id with several tags would need force,
    which would also hit images in use, so removal goes tag by tag)."""
    return [t for t in _real_tags(image) if t.startswith(f"{image_prefix()}/")]


def _reuse_cached(client: docker.DockerClient, recipe: ImageRecipe, suite: str, digest: str,
                  progress: ProgressCallback) -> str | None:
    """Point the suite tag at an earlier build with the same inputs, if one exists."""
    cached = _inspect(client, cache_tag(recipe.name, suite, digest))
    if _label(cached, LABEL_HASH) != digest:
        return None
    assert cached is not None
    _retag(client, cached["Id"], image_tag(recipe.name, suite))
    image_id = str(cached["Id"])
    progress(recipe.name, f"{image_tag(recipe.name, suite)} switched to cached build {image_id[7:19]}")
    return image_id


def _ensure_one(client: docker.DockerClient, recipe: ImageRecipe, suite: str, digest: str,
                rebuild: bool, progress: ProgressCallback, base: BaseSource,
                stop: threading.Event | None = None) -> str:
    """Build one image unless its content-hash label already matches (or a cached build does)."""
    tag = image_tag(recipe.name, suite)
    current = _inspect(client, tag)
    if not rebuild:
        if _label(current, LABEL_HASH) == digest:
            assert current is not None
            progress(recipe.name, f"{tag} up to date")
            return str(current["Id"])
        reused = _reuse_cached(client, recipe, suite, digest, progress)
        if reused:
            return reused
    if stop is not None and stop.is_set():
        raise Cancelled(recipe.name)
    why = "forced rebuild" if rebuild and current else ("inputs changed" if current else "missing")
    progress(recipe.name, f"building {tag} ({why})")
    started = time.monotonic()
    labels = _labels(recipe.name, suite, digest)
    if recipe.is_rootfs:
        image_id = _build_root(client, base, suite, labels, rebuild, progress)
    else:
        image_id = _build_dockerfile(client, recipe, suite, labels, rebuild, progress, stop)
    _retag(client, image_id, cache_tag(recipe.name, suite, digest))
    progress(recipe.name, f"built {tag} in {time.monotonic() - started:.1f}s")
    prune_cache(client, recipe.name, suite)
    return image_id


def ensure_images(names: Iterable[str] | None, suite: str = DEFAULT_SUITE, *,
                  images_dir: Path | None = None, rebuild: bool = False,
                  progress: ProgressCallback | None = None,
                  client: docker.DockerClient | None = None,
                  base: BaseSettings | None = None) -> dict[str, str]:
    """Make ``testbed/<name>:<suite>`` exist and be current for each name (None = all).

    Parents are handled first. The debian base comes from the source ``base`` allows
    (None: ``TESTBED_BASE_SOURCE`` / ``TESTBED_DEBIAN_IMAGE``, default auto). An image
    whose ``testbed.content-hash`` label matches its inputs is left alone;
    ``rebuild=True`` rebuilds every image involved, the debian base included, without
    the build cache. Returns {name: image id} for the requested images and their
    ancestors. Holds an inter-process lock for the whole run.
    """
    _check_suite(suite)
    settings = base or settings_from_env()
    recipes = discover_images(images_dir or default_images_dir())
    order = resolve_order(recipes, names)
    report = progress or _no_progress
    client = client or docker_client()
    with build_lock(report):
        source = choose_base_source(client, settings, suite, report)
        hashes = content_hashes(recipes, order, suite, source)

        def job(name: str, stop: threading.Event) -> str:
            try:
                return _ensure_one(client, recipes[name], suite, hashes[name], rebuild, report, source, stop)
            except docker.errors.DockerException as exc:  # tagging, inspecting: engine errors
                raise ImageBuildError(name, suite, [], f"{type(exc).__name__}: {exc}") from exc

        try:
            ids = run_graph({n: recipes[n].parent for n in order}, job, build_jobs())
        except JobsFailed as exc:
            raise _build_failure(exc) from None
        return {n: ids[n] for n in order}


def build_jobs() -> int:
    """How many builds may run at once: ``TESTBED_BUILD_JOBS``, default 4 (1 = one after another)."""
    raw = os.environ.get(ENV_BUILD_JOBS, "")
    if not raw:
        return DEFAULT_WORKERS
    if not raw.isdigit() or int(raw) < 1:
        raise ImageError(f"{ENV_BUILD_JOBS}={raw!r}: expected a whole number >= 1")
    return int(raw)


def _build_failure(exc: JobsFailed) -> BaseException:
    """One failure as itself (callers catch its type); several together; a bug as a bug."""
    failures = exc.failures
    bugs = [e for e in failures.values() if not isinstance(e, ImageError)]
    if bugs:
        return bugs[0]
    if len(failures) == 1:
        return next(iter(failures.values()))
    return ImageBuildsFailed({n: e for n, e in failures.items() if isinstance(e, ImageError)}, exc.not_run)


def image_status(names: Iterable[str] | None = None, suite: str = DEFAULT_SUITE, *,
                 images_dir: Path | None = None,
                 client: docker.DockerClient | None = None,
                 base: BaseSettings | None = None) -> list[ImageStatus]:
    """For ``testbed images``: each image (parents first), whether it exists and is current.

    No registry is asked: a pulled base counts as current for the image it was built
    from (the next ``ensure_images`` pulls and sees upstream changes).
    """
    _check_suite(suite)
    settings = base or settings_from_env()
    recipes = discover_images(images_dir or default_images_dir())
    order = resolve_order(recipes, names)
    client = client or docker_client()
    source = offline_source(settings, suite, _recorded_base(client, suite))
    hashes = content_hashes(recipes, order, suite, source)
    rows = []
    for name in order:
        tag = image_tag(name, suite)
        attrs = _inspect(client, tag)
        rows.append(ImageStatus(name, tag, attrs is not None, _label(attrs, LABEL_HASH) == hashes[name]))
    return rows
