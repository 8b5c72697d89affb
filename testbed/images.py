"""Image pipeline: build the lab's Docker images, from a registry's Debian or debootstrap.

Why it looks like this:

* The root of every image is ``testbed/debian:<suite>``, made from one of two sources
  (chosen in ``testbed.imagesource``): ``debian:<suite>`` pulled from a registry, with
  the testbed's apt settings and packages added by a small build; or, where no
  registry is reachable, a ``debootstrap --variant=minbase`` rootfs streamed into
  ``docker import`` (``testbed.rootfs``). Every other image is a classic-builder
  ``docker build`` FROM a local ``testbed/*`` image, run with the host's network so
  ``RUN apt-get`` reaches the image's Debian mirror.
* For debootstrap the mirror is read from the host's apt sources at run time
  (``testbed.aptsources``). A pulled image keeps its own apt sources.
* Builds are skipped when nothing changed: each image carries a label with a hash of
  its inputs (``testbed.recipes``) chained with its parent's hash, so a no-op
  ``ensure_images`` costs a few ``inspect`` calls.
* Images whose parents exist build side by side (``testbed.buildgraph``): every
  image FROM base at once, up to ``TESTBED_BUILD_JOBS`` (default 4) builds.

This module is the Docker side: builds, registry pulls, the build lock, cache tags
and their pruning, and the public ``ensure_images`` and ``image_status``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import IO, Any, NamedTuple

import docker
import docker.errors

from .buildgraph import DEFAULT_WORKERS, Cancelled, JobsFailed, run_graph
from .imagenames import (
    DEBIAN_IMAGE,
    DEFAULT_SUITE,
    IMAGE_PREFIX,
    LOG_TAIL_LINES,
    DebootstrapUnavailable,
    ImageBuildError,
    ImageError,
    ProgressCallback,
    check_suite,
    image_prefix,
    image_tag,
    relay_output,
)
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
)
from .recipes import (
    ImageRecipe,
    bundled_recipes,
    content_hashes,
    discover_images,
    resolve_order,
    write_context_tar,
    write_registry_context,
)
from .rootfs import build_debian

# Builds run at once (siblings only: a child waits for its parent). Each build is
# mostly apt downloads and dpkg, so a few overlap well even on two cores.
ENV_BUILD_JOBS = "TESTBED_BUILD_JOBS"

LABEL_HASH = "testbed.content-hash"
LABEL_IMAGE = "testbed.image"
LABEL_SUITE = "testbed.suite"

# Docker's read timeout for our own client: a quiet `RUN` step or a large import
# can take minutes without a byte on the socket.
DOCKER_TIMEOUT = 3600
# Builds kept per image and suite (see cache_tag): enough for two or three checkouts.
CACHE_KEEP = 3


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


class ImageStatus(NamedTuple):
    name: str
    tag: str
    present: bool
    up_to_date: bool


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
                relay_output(name, str(chunk["error"]), tail, progress)
                raise ImageBuildError(name, suite, tail, failure)
            if stop is not None and stop.is_set():
                progress(name, "build stopped")
                raise Cancelled(name)
            relay_output(name, str(chunk.get("stream") or chunk.get("status") or ""), tail, progress)
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
        return build_debian(client, suite, labels, progress)
    except DebootstrapUnavailable as exc:
        raise ImageSourceError(debootstrap_unavailable_message(suite, str(exc), source)) from None


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


#: An untagged build younger than this may be a stage of a build still running.
UNTAGGED_GRACE_S = 3600


def prune_cache(client: docker.DockerClient, name: str, suite: str, keep: int = CACHE_KEEP) -> None:
    """Keep the ``keep`` newest tagged builds of one image and suite; drop the rest.

    Untagged builds (their cache tag moved to a forced rebuild) can never be reused,
    so they go too, once they are older than any build: a multi-stage build's
    intermediate stage (the client image's gcc stage) is untagged and carries
    its base's labels, and removing it while another build is still running
    broke that build ("invalid from flag value shim: No such image", seen with
    two builds at once). Images still used by a container or a child image
    refuse removal; they stay until a later prune, which is what we want.
    """
    current = _inspect(client, image_tag(name, suite))
    builds = builds_of(client, name, suite)
    tagged = [b for b in builds if _testbed_tags(b)]
    settled = time.time() - UNTAGGED_GRACE_S
    untagged = [b for b in builds if not _testbed_tags(b) and b.get("Created", 0) < settled]
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
    check_suite(suite)
    settings = base or settings_from_env()
    recipes = discover_images(images_dir) if images_dir else bundled_recipes()
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
    check_suite(suite)
    settings = base or settings_from_env()
    recipes = discover_images(images_dir) if images_dir else bundled_recipes()
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
