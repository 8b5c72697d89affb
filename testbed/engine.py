"""A Docker engine of another version, nested in a container of the machine's engine.

Labs must work on the engines users have (27, 28, 29), not only on the one a
machine happens to run. Debian packages several: bookworm's docker.io is 20.10,
trixie's 26.1, forky's 28.5. ``start`` runs one of them as a container of the
machine's engine (see docs/engines.md for why each option is there), loads the
lab images into it, and hands back a ``DOCKER_HOST`` that the CLI, the SDK and
testinfra all honour. The nested engine runs with its default settings, as a
user's would: nothing about the host's engine, firewall or sysctls changes.

Like a lab, everything here carries a label (``testbed.engine=<name>``) and
``stop`` selects by label only, so ``testbed engine down --all`` also removes
what a killed run left behind.
"""

from __future__ import annotations

import contextlib
import grp
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from . import resources
from .errors import LabError
from .imagenames import SUITES, image_tag
from .images import LABEL_IMAGE, LABEL_SUITE, ensure_images

LABEL_ENGINE = "testbed.engine"  # the engine's name, on its container and volume
LABEL_ENGINE_SUITE = "testbed.engine.suite"
LABEL_ENGINE_SOCKET = "testbed.engine.socket"  # host directory that holds its socket
ENGINE_IMAGE = "engine"
# Debian suite -> the docker.io it ships (what `testbed engine --suite` offers).
ENGINE_SUITES = {"bookworm": "20.10", "trixie": "26.1", "forky": "28.5"}
DEFAULT_ENGINE_SUITE = "forky"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10

Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass(frozen=True)
class NestedEngine:
    name: str
    suite: str
    container: str
    socket_dir: Path

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket_dir}/docker.sock"

    def client(self, timeout: int = 120) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.docker_host, timeout=timeout, max_pool_size=32)


def engine_images_dir() -> Path:
    """``images/nested/``: the engine's recipe, apart from the lab images."""
    return resources.images_dir() / "nested"


def _socket_root() -> Path:
    """Where the engines' socket directories live (a short path: sockets are limited to 108 bytes)."""
    env = os.environ.get("TESTBED_ENGINE_DIR")
    root = Path(env) if env else Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    return root


def _docker_gid() -> int | None:
    """The host's docker group, so that its members may use the nested engine's socket too."""
    try:
        return grp.getgrnam("docker").gr_gid
    except KeyError:
        return None


def _create_engine_container(host: docker.DockerClient, name: str, suite: str, image_id: str,
                             volume: str, socket_dir: Path) -> str:
    """Create the engine container: what dockerd needs, and nothing more.

    ``--privileged`` would be simpler but fails on machines whose capability
    bounding set lacks CAP_SYS_RESOURCE, so the capabilities are spelled out.
    dockerd writes IPv6 sysctls (no masked or read-only /proc paths: the CLI's
    ``systempaths=unconfined``), creates cgroups (the host's cgroup tree,
    read-write, under a parent named for this engine), and keeps images and
    containers on a labelled volume (overlay on overlay does not work).
    """
    labels = {LABEL_ENGINE: name, LABEL_ENGINE_SUITE: suite, LABEL_ENGINE_SOCKET: str(socket_dir)}
    command = ["--host=unix:///sock/docker.sock", f"--cgroup-parent=/testbed-engine-{name}"]
    gid = _docker_gid()
    if gid is not None:
        command.append(f"--group={gid}")
    api = host.api
    host_config = api.create_host_config(
        cap_add=["ALL"],
        cap_drop=["SYS_RESOURCE"],
        security_opt=["seccomp=unconfined", "apparmor=unconfined"],
        cgroupns="host",
        binds={
            "/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"},
            volume: {"bind": "/var/lib/docker", "mode": "rw"},
            str(socket_dir): {"bind": "/sock", "mode": "rw"},
        },
    )
    host_config["MaskedPaths"] = []
    host_config["ReadonlyPaths"] = []
    created = api.create_container(image_id, command=command, name=f"testbed-engine-{name}",
                                   hostname=f"engine-{name}", labels=labels, host_config=host_config, detach=True)
    api.start(created["Id"])
    return str(created["Id"])


def build_engine_image(host: docker.DockerClient, suite: str, progress: Callable[[str, str], None]) -> str:
    """``testbed/engine:<suite>``: the suite's docker.io on the testbed's Debian base."""
    if suite not in ENGINE_SUITES:
        raise LabError(f"no engine for suite {suite!r}; choose one of: "
                       + ", ".join(f"{s} (docker.io {v})" for s, v in ENGINE_SUITES.items()))
    built = ensure_images([ENGINE_IMAGE], suite, images_dir=engine_images_dir(), progress=progress, client=host)
    return built[ENGINE_IMAGE]


def start(host: docker.DockerClient, suite: str = DEFAULT_ENGINE_SUITE, name: str | None = None,
          progress: Progress = _quiet) -> NestedEngine:
    """Build the engine image if needed, start the engine, and wait until it answers."""
    name = name or secrets.token_hex(3)
    image_id = build_engine_image(host, suite, lambda image, msg: progress(f"image {image}: {msg}"))
    # The volume first: a socket directory always has a labelled object beside it (see stop).
    volume = host.volumes.create(f"testbed-engine-{name}", labels={LABEL_ENGINE: name, LABEL_ENGINE_SUITE: suite})
    socket_dir = Path(tempfile.mkdtemp(prefix=f"testbed-engine-{name}-", dir=_socket_root()))
    socket_dir.chmod(0o755)
    engine = NestedEngine(name, suite, f"testbed-engine-{name}", socket_dir)
    try:
        _create_engine_container(host, name, suite, image_id, volume.name, socket_dir)
        _wait_ready(host, engine)
    except docker.errors.APIError as exc:
        stop(host, name)
        raise LabError(f"cannot start the nested engine: {exc.explanation or exc}") from None
    except BaseException:
        stop(host, name)
        raise
    progress(f"engine {name}: docker.io {_server_version(engine)} ({suite}) at {engine.docker_host}")
    return engine


def _server_version(engine: NestedEngine) -> str:
    version = engine.client().version()
    return f"{version.get('Version', '?')}, API {version.get('ApiVersion', '?')}"


def _wait_ready(host: docker.DockerClient, engine: NestedEngine) -> None:
    """Until the nested dockerd answers a ping; its own log if it dies first."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    sock = engine.socket_dir / "docker.sock"
    while time.monotonic() < deadline:
        state = host.api.inspect_container(engine.container)["State"]
        if not state.get("Running"):
            raise LabError(f"the nested engine exited ({state.get('ExitCode')}):\n{_log_tail(host, engine)}")
        if sock.exists():
            with contextlib.suppress(docker.errors.DockerException, OSError):
                if engine.client(timeout=5).ping():
                    return
        time.sleep(0.3)
    raise LabError(f"the nested engine did not answer within {READY_TIMEOUT_S:.0f} s:\n{_log_tail(host, engine)}")


def _log_tail(host: docker.DockerClient, engine: NestedEngine, lines: int = 20) -> str:
    with contextlib.suppress(docker.errors.DockerException):
        return host.api.logs(engine.container, tail=lines).decode("utf-8", "replace")
    return ""


def lab_images(host: docker.DockerClient, suites: Sequence[str] = SUITES) -> list[str]:
    """The lab images on the host engine (``testbed/<name>:<suite>``), engines excluded."""
    refs = set()
    for image in host.api.images(filters={"label": LABEL_IMAGE}):
        labels = image.get("Labels") or {}
        name, suite = labels.get(LABEL_IMAGE), labels.get(LABEL_SUITE)
        if name == ENGINE_IMAGE or suite not in suites:
            continue
        tag = image_tag(str(name), str(suite))
        if tag in (image.get("RepoTags") or []):
            refs.add(tag)
    return sorted(refs)


def load_images(host: docker.DockerClient, engine: NestedEngine, refs: Sequence[str],
                progress: Progress = _quiet) -> float:
    """``docker save REFS | docker load`` from the host engine into the nested one, streamed.

    One archive for all images sends each shared layer (the Debian base) once.
    Labels travel with the images, so the builder in the nested engine sees
    them as current and builds nothing.
    """
    if not refs:
        return 0.0
    started = time.monotonic()
    api = host.api
    # docker-py's get_image takes one name; the endpoint takes several (docker save A B).
    response = api._get(api._url("/images/get"), params={"names": list(refs)}, stream=True)
    api._raise_for_status(response)
    try:
        for message in engine.client(timeout=600).api.load_image(response.iter_content(1 << 20)):
            if message.get("error"):
                raise LabError(f"loading images into the nested engine failed: {message['error']}")
    except docker.errors.DockerException as exc:
        raise LabError(f"loading images into the nested engine failed: {exc}") from None
    finally:
        response.close()
    elapsed = time.monotonic() - started
    progress(f"engine {engine.name}: loaded {len(refs)} images in {elapsed:.1f} s")
    return elapsed


def running(host: docker.DockerClient) -> list[NestedEngine]:
    """Every nested engine container on the host engine, running or not."""
    found = []
    for c in host.api.containers(all=True, filters={"label": LABEL_ENGINE}):
        labels = c.get("Labels") or {}
        found.append(NestedEngine(labels[LABEL_ENGINE], labels.get(LABEL_ENGINE_SUITE, "?"),
                                  c["Names"][0].lstrip("/"), Path(labels.get(LABEL_ENGINE_SOCKET, ""))))
    return found


def stop(host: docker.DockerClient, name: str | None = None) -> list[str]:
    """Stop and remove one engine (or every engine): container, volume, socket directory.

    dockerd gets SIGTERM first so that it stops its own containers; whatever is
    left inside dies with the container's PID namespace, and its networks with
    the container's network namespace.
    """
    selector = f"{LABEL_ENGINE}={name}" if name else LABEL_ENGINE
    removed = []
    for c in host.api.containers(all=True, filters={"label": selector}):
        labels = c.get("Labels") or {}
        with contextlib.suppress(docker.errors.APIError):
            host.api.stop(c["Id"], timeout=STOP_GRACE_S)
        with contextlib.suppress(docker.errors.NotFound):
            host.api.remove_container(c["Id"], force=True, v=True)
        removed.append(labels.get(LABEL_ENGINE, "?"))
        _remove_socket_dir(labels.get(LABEL_ENGINE_SOCKET, ""))
        _remove_cgroups(labels.get(LABEL_ENGINE, ""))
    for v in host.api.volumes(filters={"label": selector}).get("Volumes") or []:
        with contextlib.suppress(docker.errors.NotFound):
            host.api.remove_volume(v["Name"], force=True)
        removed.append(v.get("Labels", {}).get(LABEL_ENGINE, "?"))
    if name is None:
        # Socket directories with no engine object left (a run killed between steps, objects removed by hand).
        names = {e.name for e in running(host)} | {
            (v.get("Labels") or {}).get(LABEL_ENGINE) for v in host.api.volumes(filters={"label": LABEL_ENGINE}).get("Volumes") or []}
        for leftover in _socket_root().glob("testbed-engine-*"):
            if leftover.name.split("-")[2] not in names:
                _remove_socket_dir(str(leftover))
    return sorted(set(removed))


def _remove_socket_dir(path: str) -> None:
    """Only a directory this module made (its name says so) is removed."""
    if path and Path(path).name.startswith("testbed-engine-"):
        shutil.rmtree(path, ignore_errors=True)


def _remove_cgroups(name: str) -> None:
    """The nested dockerd's empty parent cgroups (rmdir removes only empty ones)."""
    if not name:
        return
    for parent in Path("/sys/fs/cgroup").glob(f"*/testbed-engine-{name}"):
        with contextlib.suppress(OSError):
            parent.rmdir()
    with contextlib.suppress(OSError):
        Path(f"/sys/fs/cgroup/testbed-engine-{name}").rmdir()


@contextlib.contextmanager
def nested(host: docker.DockerClient, suite: str = DEFAULT_ENGINE_SUITE, load: bool = True,
           progress: Progress = _quiet, image_suites: Sequence[str] = SUITES) -> Iterator[NestedEngine]:
    """An engine for the length of a ``with`` block, removed on every way out.

    ``image_suites``: whose lab images to copy in (fewer is faster; others would be built there).
    """
    engine = start(host, suite, progress=progress)
    try:
        if load:
            load_images(host, engine, lab_images(host, image_suites), progress)
        yield engine
    finally:
        stop(host, engine.name)


def run_command(host: docker.DockerClient, argv: Sequence[str], suite: str = DEFAULT_ENGINE_SUITE,
                load: bool = True, progress: Progress = _quiet, image_suites: Sequence[str] = SUITES) -> int:
    """Run a command with DOCKER_HOST pointing at a fresh nested engine; return its exit status.

    Ctrl-C reaches the command through the terminal; SIGTERM is passed on to it.
    Either way the command is waited for (its own cleanup runs against the
    nested engine) and the engine is removed after it.
    """
    with nested(host, suite, load, progress, image_suites) as engine:
        env = {**os.environ, "DOCKER_HOST": engine.docker_host, "TESTBED_ENGINE": engine.name}
        proc = subprocess.Popen(list(argv), env=env)

        def forward(signum: int, _frame: Any) -> None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)

        # Ctrl-C already reaches the command (same process group); a second SIGINT
        # from us would cut its cleanup short. SIGTERM comes to us alone.
        previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.SIG_IGN),
                    signal.SIGTERM: signal.signal(signal.SIGTERM, forward)}
        try:
            return proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
