"""Where the root image ``testbed/debian:<suite>`` comes from: a registry or debootstrap.

Why it looks like this:

* Pulling ``debian:<suite>`` is the conventional path and needs neither root nor a
  Debian host (a docker-group user, Fedora, Arch, Docker Desktop). debootstrap is kept
  for machines that reach no registry; it needs root, debootstrap and Debian apt sources.
* ``auto`` (the default) asks the registry first, through the engine and with a short
  timeout, and falls back to debootstrap with one progress line saying why. The engine,
  not this process, talks to the registry: it may have a registry mirror or a proxy.
* This module is pure (settings, decisions, hash data, messages); ``testbed.images``
  and ``testbed.rootfs`` make the Docker calls.
* The source is part of the debian image's content hash: the reference and the pulled
  image's id, so a changed upstream image rebuilds everything on top of it. The
  debootstrap hash data is exactly what it was before registries were supported, so
  existing images stay current.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from .errors import TestbedError

ENV_SOURCE = "TESTBED_BASE_SOURCE"
ENV_REPOSITORY = "TESTBED_DEBIAN_IMAGE"
DEFAULT_REPOSITORY = "debian"

# How long the engine may take to answer whether the registry has the image. An
# unreachable registry usually fails at once (no such host, connection refused); this
# bounds the case where packets are dropped, which would otherwise take minutes.
REGISTRY_TIMEOUT = 10.0

LABEL_SOURCE = "testbed.base-source"
LABEL_REFERENCE = "testbed.base-reference"
LABEL_PULLED_ID = "testbed.base-image-id"

# A repository as ``docker pull`` takes it, without tag or digest (the suite is the tag):
# optional registry host[:port], then lower-case path components.
_REPOSITORY_RE = re.compile(
    r"^(?:(?P<host>[A-Za-z0-9.-]+(?::[0-9]+)?)/)?"
    r"(?P<path>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)$"
)


class SourceKind(StrEnum):
    AUTO = "auto"
    REGISTRY = "registry"
    DEBOOTSTRAP = "debootstrap"


class ImageSourceError(TestbedError):
    """The base image cannot be had this way; the message names the fixes that work."""


@dataclass(frozen=True)
class BaseSettings:
    """What the user asked for: which source, and which repository to pull from."""

    source: SourceKind = SourceKind.AUTO
    repository: str = DEFAULT_REPOSITORY

    def reference(self, suite: str) -> str:
        """``<repository>:<suite>``: the registry's Debian images are tagged by codename."""
        return f"{self.repository}:{suite}"


def parse_source(value: str, origin: str = ENV_SOURCE) -> SourceKind:
    try:
        return SourceKind(value.strip().lower())
    except ValueError:
        choices = "|".join(k.value for k in SourceKind)
        raise ImageSourceError(f"{origin}={value!r}: expected {choices}") from None


def check_repository(value: str, origin: str = ENV_REPOSITORY) -> str:
    """A pullable repository name without tag, e.g. ``registry.example:5000/library/debian``."""
    repo = value.strip()
    example = "e.g. registry.example:5000/library/debian"
    if "@" in repo or ":" in repo.rsplit("/", 1)[-1]:
        raise ImageSourceError(
            f"{origin}={value!r}: give the repository without a tag or digest ({example}); "
            "the suite (bookworm, trixie) is used as the tag"
        )
    if not _REPOSITORY_RE.match(repo):
        raise ImageSourceError(
            f"{origin}={value!r}: not a valid image repository ({example}; the path is lower-case)"
        )
    return repo


def settings_from_env(environ: Mapping[str, str] = os.environ, source: str | None = None,
                      repository: str | None = None) -> BaseSettings:
    """Settings from the CLI options (when given) or the environment, validated."""
    src = parse_source(source, "--base-source") if source else parse_source(environ.get(ENV_SOURCE) or "auto")
    repo = (check_repository(repository, "--debian-image") if repository
            else check_repository(environ.get(ENV_REPOSITORY) or DEFAULT_REPOSITORY))
    return BaseSettings(src, repo)


# ------------------------------------------------------------------------ sources


@dataclass(frozen=True)
class BaseSource:
    """Where this run takes testbed/debian from. ``note`` says why, for progress and errors."""

    kind: SourceKind
    reference: str  # the registry image tried or used (for messages when it was not used)
    pulled_id: str | None = None
    note: str = ""

    @classmethod
    def debootstrap(cls, reference: str, note: str = "") -> BaseSource:
        return cls(SourceKind.DEBOOTSTRAP, reference, note=note)

    @classmethod
    def registry(cls, reference: str, pulled_id: str | None, note: str = "") -> BaseSource:
        return cls(SourceKind.REGISTRY, reference, pulled_id, note)

    @property
    def is_registry(self) -> bool:
        return self.kind is SourceKind.REGISTRY

    def labels(self) -> dict[str, str]:
        """Recorded on testbed/debian, so a later run knows what it was made from offline."""
        if not self.is_registry:
            return {LABEL_SOURCE: SourceKind.DEBOOTSTRAP.value}
        return {LABEL_SOURCE: SourceKind.REGISTRY.value, LABEL_REFERENCE: self.reference,
                LABEL_PULLED_ID: self.pulled_id or ""}

    def describe(self) -> str:
        if self.is_registry:
            short = (self.pulled_id or "")[7:19] or "not pulled"
            what = f"registry {self.reference} ({short})"
        else:
            what = "debootstrap"
        return f"source: {what}" + (f"; {self.note}" if self.note else "")


def recorded_source(labels: Mapping[str, str] | None) -> BaseSource | None:
    """The registry source an existing testbed/debian image was made from, if it was."""
    if labels and labels.get(LABEL_SOURCE) == SourceKind.REGISTRY.value and labels.get(LABEL_REFERENCE):
        return BaseSource.registry(labels[LABEL_REFERENCE], labels.get(LABEL_PULLED_ID) or None)
    return None


@dataclass(frozen=True)
class RegistryFailure:
    """Why the engine could not tell us about ``reference``, sorted into what fixes it."""

    reference: str
    kind: str  # "unreachable", "not-found", "denied", "bad-reference"
    detail: str


def classify_registry_error(reference: str, status: int | None, detail: str) -> RegistryFailure:
    """Sort an engine error from the registry probe by HTTP status and message."""
    text = detail.lower()
    if status == 400 or "invalid reference" in text:
        kind = "bad-reference"
    elif status in (401, 403) or "unauthorized" in text or "denied" in text:
        kind = "denied"
    elif status == 404 or "manifest unknown" in text or "not found" in text:
        kind = "not-found"
    else:
        kind = "unreachable"
    return RegistryFailure(reference, kind, detail.strip())


def sudo_hint(suite: str, executable: str = sys.executable) -> str:
    """The command that really works as root: sudo's PATH does not contain the venv."""
    script = Path(executable).parent / "testbed"
    command = str(script) if script.exists() else "testbed"
    return f"sudo {command} images --build --suite {suite}"


def fixes(reference: str, suite: str) -> str:
    """The two ways that work on any machine, as one sentence for error messages."""
    return (
        f"either let the Docker engine pull {reference}: set {ENV_REPOSITORY} to a "
        f"registry it can reach that has it (e.g. {ENV_REPOSITORY}=registry.example:5000/library/debian), "
        f"or build from the Debian mirror with debootstrap: install it (apt-get install debootstrap) "
        f"and run once as root: {sudo_hint(suite)}"
    )


def registry_failure_message(failure: RegistryFailure, suite: str) -> str:
    """The error for a forced registry source that cannot work, with its fix."""
    ref = failure.reference
    if failure.kind == "not-found":
        why = f"the registry has no image {ref} (check {ENV_REPOSITORY}, or push {ref} there)"
    elif failure.kind == "denied":
        registry = ref.split("/", 1)[0] if "/" in ref else "<registry>"
        why = f"the registry refused {ref}: {failure.detail} (run `docker login {registry}` first)"
    elif failure.kind == "bad-reference":
        why = f"the engine rejects the reference {ref}: {failure.detail}"
    else:
        why = f"cannot pull {ref}: {failure.detail}"
    return f"{ENV_SOURCE}=registry, but {why}. Fixes: {fixes(ref, suite)}"


def source_after_probe(settings: BaseSettings, suite: str, failure: RegistryFailure | None,
                       recorded: BaseSource | None) -> BaseSource | None:
    """The source when the registry probe failed; None when it worked (then: pull).

    An image pulled from the same reference earlier is kept while the registry cannot
    be reached (a laptop offline); otherwise ``auto`` falls back to debootstrap, and a
    forced ``registry`` is an error naming the fix.
    """
    if failure is None:
        return None
    if recorded and recorded.reference == failure.reference:
        return replace(recorded, note=f"registry not reachable now ({failure.detail}); keeping the image pulled before")
    if settings.source is SourceKind.REGISTRY:
        raise ImageSourceError(registry_failure_message(failure, suite))
    return BaseSource.debootstrap(failure.reference,
                                  note=f"registry image {failure.reference} not available ({failure.detail})")


def offline_source(settings: BaseSettings, suite: str, recorded: BaseSource | None) -> BaseSource:
    """The source as far as it is known without asking a registry (for ``image_status``)."""
    reference = settings.reference(suite)
    if settings.source is not SourceKind.DEBOOTSTRAP and recorded and recorded.reference == reference:
        return recorded
    if settings.source is SourceKind.REGISTRY:
        return BaseSource.registry(reference, None)  # matches no image: a pull is due
    return BaseSource.debootstrap(reference)


def debootstrap_unavailable_message(suite: str, reason: str, source: BaseSource) -> str:
    """debootstrap was chosen but cannot run here: say why and the fixes that work."""
    head = f"cannot build the {suite} base image with debootstrap: {reason.rstrip('.')}"
    if source.note:
        head = f"{source.note}, and {head}"
    return f"{head}. Fixes: {fixes(source.reference, suite)}"
