"""The host's apt sources and the Debian mirror the debootstrap base is built from.

Pure except for reading ``/etc/apt`` (and distro-info's list of Debian releases):
mirrors differ between machines, so the mirror is read at run time (or taken from
``TESTBED_MIRROR``) and never written into the code.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .imagenames import SUITES, DebootstrapUnavailable


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
