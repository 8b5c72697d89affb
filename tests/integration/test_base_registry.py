"""The registry path of the base image, against a real registry on loopback.

Debian's ``docker-registry`` (the distribution registry v2) serves a stand-in on
127.0.0.1 (an insecure registry the engine allows by default). The test pushes the
local Debian base into it, lets the builder pull it back and build the testbed's
debian image on top, and checks that a second call skips. Everything it creates is
under its own image prefix (and the stand-in's repository name) and removed after;
the shared ``testbed/*`` images are only read.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker.errors
import pytest

from testbed import imagenames as N
from testbed import images as I
from testbed.imagesource import BaseSettings, ImageSourceError, SourceKind

REGISTRY_BIN = Path("/usr/bin/docker-registry")
SUITE = "bookworm"
READY_WITHIN_S = 30.0


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _wait_until_serving(proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
    deadline = time.monotonic() + READY_WITHIN_S
    while not _answers(url):
        if proc.poll() is not None or time.monotonic() > deadline:
            state = f"exited with {proc.returncode}" if proc.poll() is not None else f"not serving after {READY_WITHIN_S:g} s"
            pytest.fail(f"the stand-in registry {state}; its log:\n{log.read_text(errors='replace')}", pytrace=False)
        time.sleep(0.1)


@pytest.fixture(scope="module")
def registry() -> Iterator[str]:
    """``127.0.0.1:<port>`` of a registry this test starts and stops itself."""
    if not REGISTRY_BIN.exists():
        pytest.fail(f"{REGISTRY_BIN} is missing: install Debian's docker-registry package "
                    "(`make host-tools` does, as root on Debian: apt-get install docker-registry)", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="testbed-registry-") as tmp:
        address = f"127.0.0.1:{_free_loopback_port()}"
        config = Path(tmp, "config.yml")
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {tmp}/storage\n"
            f"http:\n  addr: {address}\n"
        )
        log = Path(tmp, "registry.log")
        with log.open("wb") as out:
            proc = subprocess.Popen([str(REGISTRY_BIN), "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_until_serving(proc, f"http://{address}/v2/", log)
            yield address
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _remove_tags(client, tags: list[str]) -> None:
    """Untag (and so delete, when nothing else holds it) only what this test made."""
    for tag in tags:
        try:
            client.api.remove_image(tag)
        except docker.errors.ImageNotFound:
            pass


def _push(client, image_id: str, repository: str) -> None:
    client.api.tag(image_id, repository, SUITE)
    for chunk in client.api.push(repository, SUITE, stream=True, decode=True):
        assert "error" not in chunk, f"push to the stand-in registry failed: {chunk['error']}"


@pytest.fixture(scope="module")
def stand_in(docker_client, registry) -> Iterator[tuple[str, str]]:
    """``(repository, image id)``: the local Debian base, pushed as ``<registry>/stand-in/debian``.

    Its apt sources are this machine's mirror, so the builder's ``apt-get`` works
    here just as the real registry image's own sources do elsewhere.
    """
    local_id = I.ensure_images([N.DEBIAN_IMAGE], SUITE)[N.DEBIAN_IMAGE]
    repository = f"{registry}/stand-in/debian"
    try:
        _push(docker_client, local_id, repository)
        _remove_tags(docker_client, [f"{repository}:{SUITE}"])  # the builder must pull it
        yield repository, local_id
    finally:
        _remove_tags(docker_client, [f"{repository}:{SUITE}"])


@pytest.fixture
def own_prefix(monkeypatch: pytest.MonkeyPatch, docker_client) -> Iterator[str]:
    """A prefix of this test's own, so the shared testbed/* images are never touched."""
    prefix = f"testbed-regtest-{secrets.token_hex(4)}"
    monkeypatch.setenv(N.ENV_PREFIX, prefix)
    try:
        yield prefix
    finally:
        mine = [t for image in docker_client.api.images() for t in image.get("RepoTags") or []
                if t.startswith(f"{prefix}/")]
        _remove_tags(docker_client, mine)


def test_base_is_pulled_labelled_and_then_skipped(docker_client, stand_in, own_prefix: str) -> None:
    repository, stand_in_id = stand_in
    shared_before = docker_client.api.inspect_image(f"{N.IMAGE_PREFIX}/debian:{SUITE}")["Id"]
    base = BaseSettings(SourceKind.AUTO, repository)
    messages: list[str] = []
    built = I.ensure_images([N.DEBIAN_IMAGE], SUITE, base=base, progress=lambda _n, m: messages.append(m))
    debian_id = built[N.DEBIAN_IMAGE]

    attrs = docker_client.api.inspect_image(f"{own_prefix}/debian:{SUITE}")
    labels = attrs["Config"]["Labels"]
    assert attrs["Id"] == debian_id
    assert labels["testbed.base-source"] == "registry", messages
    assert labels["testbed.base-reference"] == f"{repository}:{SUITE}"
    assert labels["testbed.base-image-id"] == stand_in_id  # pushed and pulled back: the same image
    assert (labels[I.LABEL_IMAGE], labels[I.LABEL_SUITE]) == (N.DEBIAN_IMAGE, SUITE)
    assert f"{own_prefix}/debian:{SUITE}-{labels[I.LABEL_HASH][:12]}" in attrs["RepoTags"]
    assert any(m.startswith(f"pulling {repository}:{SUITE}") for m in messages)
    assert attrs["Config"]["Env"] and "LANG=C.UTF-8" in attrs["Config"]["Env"]

    again: list[str] = []
    assert I.ensure_images([N.DEBIAN_IMAGE], SUITE, base=base, progress=lambda _n, m: again.append(m)) == built
    assert f"{own_prefix}/debian:{SUITE} up to date" in again
    assert not any(m.startswith("building ") for m in again)
    assert docker_client.api.inspect_image(f"{N.IMAGE_PREFIX}/debian:{SUITE}")["Id"] == shared_before


def test_forced_registry_errors_come_from_the_real_engine(registry, own_prefix: str) -> None:
    closed = f"127.0.0.1:{_free_loopback_port()}/stand-in/debian"
    cases = [(f"{registry}/stand-in/nothing-here", "the registry has no image"),
             (closed, "connection refused")]
    for repository, needle in cases:
        with pytest.raises(ImageSourceError, match=needle) as err:
            I.ensure_images([N.DEBIAN_IMAGE], SUITE, base=BaseSettings(SourceKind.REGISTRY, repository))
        assert "TESTBED_DEBIAN_IMAGE=" in str(err.value)
