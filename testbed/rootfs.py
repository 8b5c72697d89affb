"""The debootstrap base: a ``--variant=minbase`` rootfs streamed into ``docker import``.

For machines that reach no registry. Needs root and debootstrap; the mirror comes
from the host's apt sources (``testbed.aptsources``). The rootfs is built in a
scratch directory that is removed only once nothing is mounted inside it; the
directories of killed builds are removed by the next build (``remove_stale_scratch``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path

import docker
import docker.errors

from .aptsources import DebianMirror, find_mirror
from .debianrecipe import DEBIAN_IMAGE_CHANGES, DEBOOTSTRAP_PACKAGES, ROOTFS_FILES, ROOTFS_PRUNE
from .imagenames import (
    DEBIAN_IMAGE,
    EXTRA_BUILD_SUITES,
    LOG_TAIL_LINES,
    DebootstrapUnavailable,
    ImageBuildError,
    ImageError,
    ProgressCallback,
    image_prefix,
    image_tag,
    relay_output,
)
from .imagesource import sudo_hint
from .owner import LABEL_PROCESS, lab_state, process_label

log = logging.getLogger(__name__)


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
            relay_output(DEBIAN_IMAGE, line, tail, progress)
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


def build_debian(client: docker.DockerClient, suite: str, labels: dict[str, str],
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
