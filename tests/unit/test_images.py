"""Unit tests for the image pipeline (images, recipes, aptsources, rootfs): no Docker, no network, no root."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import threading
import time
import textwrap
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from testbed import debianrecipe, rootfs
from testbed import images as I
from testbed.aptsources import (
    DebianMirror,
    find_mirror,
    parse_deb822_sources,
    parse_one_line_sources,
    read_apt_sources,
    select_mirror,
)
from testbed.buildgraph import Cancelled
from testbed.imagenames import ENV_PREFIX, LOG_TAIL_LINES, ImageBuildError, ImageError, image_tag
from testbed.imagesource import REGISTRY_TIMEOUT, BaseSettings, BaseSource, ImageSourceError, SourceKind
from testbed.recipes import (
    content_hashes,
    context_entries,
    discover_images,
    parse_parent,
    resolve_order,
    write_context_tar,
    write_registry_context,
)

REPO = Path(__file__).resolve().parents[2]

# ----------------------------------------------------------------------- fixtures

OPTS = "[arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
ONE_LINE = textwrap.dedent(f"""\
    # main archive
    deb {OPTS} http://mirror.example.org/debian bookworm main contrib
    deb-src http://mirror.example.org/debian bookworm main
    deb http://mirror.example.org/debian bookworm-updates main # trailing comment
    #deb http://disabled.example.org/debian bookworm main
    deb http://security.example.org/debian-security bookworm-security main
    deb https://packages.example.com/apt cloud-sdk-bookworm main
    """)

DEB822 = textwrap.dedent("""\
    # The Debian archive
    Types: deb deb-src
    URIs: http://mirror.example.org/debian/
    Suites: bookworm bookworm-updates
    Components: main
    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

    Types: deb
    URIs: http://disabled.example.org/debian
    Suites: bookworm
    Components: main
    Enabled: no

    Types: deb
    URIs: http://security.example.org/debian-security
    Suites: bookworm-security
    Components: main
    Signed-By:
     -----BEGIN PGP PUBLIC KEY BLOCK-----
     .
     mQINBGNotAKeyAtAll
     -----END PGP PUBLIC KEY BLOCK-----
    """)

THIRD_PARTY = textwrap.dedent("""\
    Types: deb
    URIs: https://deb.example.net/node_20.x
    Suites: nodistro
    Components: main
    Signed-By: /usr/share/keyrings/example.gpg
    """)


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def dockerfile(parent: str, body: str = "") -> str:
    return f"ARG SUITE\nFROM testbed/{parent}:${{SUITE}}\n{body}"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A small repository: base <- (mta, dns); dns pulls package code in via context.txt."""
    write(tmp_path / "images/base/Dockerfile", dockerfile("debian", "COPY tb-init /x\n"))
    write(tmp_path / "images/base/tb-init", "#!/bin/sh\n", 0o755)
    write(tmp_path / "images/mta/Dockerfile", dockerfile("base", "RUN true\n"))
    write(tmp_path / "images/dns/Dockerfile", dockerfile("base", "COPY testbed/ /opt/\n"))
    write(tmp_path / "images/dns/context.txt", "# code\ntestbed/__init__.py\n\ntestbed/dnsserver/  # dir\n")
    write(tmp_path / "testbed/__init__.py", '"""pkg"""\n')
    write(tmp_path / "testbed/dnsserver/__init__.py", '"""dns"""\n')
    write(tmp_path / "testbed/dnsserver/zone.py", "ZONE = 1\n")
    (tmp_path / "images/README-not-an-image").mkdir()
    return tmp_path


def hashes(repo: Path, suite: str = "bookworm") -> dict[str, str]:
    return content_hashes(discover_images(repo / "images"), None, suite)


# ----------------------------------------------------------------- apt sources


def test_one_line_sources_parsed_with_options_and_comments() -> None:
    src = parse_one_line_sources(ONE_LINE, origin="x.list")
    assert [s.types[0] for s in src] == ["deb", "deb-src", "deb", "deb", "deb"]
    first = src[0]
    assert first.uris == ("http://mirror.example.org/debian",)
    assert first.suites == ("bookworm",)
    assert first.components == ("main", "contrib")
    assert "debian-archive-keyring" in first.signed_by
    assert src[2].suites == ("bookworm-updates",)  # trailing comment dropped


def test_one_line_mirror_selection() -> None:
    mirror = select_mirror(parse_one_line_sources(ONE_LINE))
    assert mirror.url == "http://mirror.example.org/debian"
    assert mirror.security_url == "http://security.example.org/debian-security"
    assert mirror.updates


def test_deb822_parsed_with_multiline_fields_and_enabled_no() -> None:
    src = parse_deb822_sources(DEB822, origin="debian.sources")
    assert len(src) == 3
    assert src[0].types == ("deb", "deb-src")
    assert src[0].suites == ("bookworm", "bookworm-updates")
    assert not src[1].enabled
    assert "BEGIN PGP" in src[2].signed_by


def test_deb822_mirror_selection_skips_disabled_and_strips_slash() -> None:
    mirror = select_mirror(parse_deb822_sources(DEB822))
    assert mirror.url == "http://mirror.example.org/debian"
    assert mirror.security_url == "http://security.example.org/debian-security"
    assert mirror.updates


def test_read_apt_sources_reads_only_what_apt_reads(tmp_path: Path) -> None:
    write(tmp_path / "sources.list", "deb http://one.example.org/debian bookworm main\n")
    write(tmp_path / "sources.list.d/debian.sources", DEB822)
    write(tmp_path / "sources.list.d/extra.list", "deb http://two.example.org/debian trixie main\n")
    write(tmp_path / "sources.list.d/old.list.disabled", "deb http://no.example.org/debian sid main\n")
    uris = {u for s in read_apt_sources(tmp_path) for u in s.uris}
    assert "http://one.example.org/debian" in uris
    assert "http://two.example.org/debian" in uris
    assert "http://security.example.org/debian-security" in uris
    assert not any("no.example.org" in u for u in uris)


def test_missing_sources_list_is_fine(tmp_path: Path) -> None:
    write(tmp_path / "sources.list.d/debian.sources", DEB822)
    assert find_mirror(tmp_path).url == "http://mirror.example.org/debian"


def test_no_debian_source_is_a_clear_error() -> None:
    src = parse_deb822_sources(THIRD_PARTY)
    src += parse_one_line_sources("deb http://archive.example.com/ubuntu jammy main\n")
    with pytest.raises(ImageError, match="TESTBED_MIRROR"):
        select_mirror(src)


def test_no_security_source_means_none() -> None:
    src = parse_one_line_sources("deb http://mirror.example.org/debian bookworm main\n")
    mirror = select_mirror(src)
    assert mirror.security_url is None
    assert not mirror.updates
    assert mirror.sources_list("trixie") == "deb http://mirror.example.org/debian trixie main\n"


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "sources.list.d/debian.sources", DEB822)
    monkeypatch.setenv("TESTBED_MIRROR", "http://other.example.org/debian/")
    monkeypatch.setenv("TESTBED_SECURITY_MIRROR", "")
    mirror = find_mirror(tmp_path)
    assert mirror.url == "http://other.example.org/debian"
    assert mirror.security_url is None


def test_env_override_works_without_any_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_MIRROR", "http://other.example.org/debian")
    monkeypatch.delenv("TESTBED_SECURITY_MIRROR", raising=False)
    assert find_mirror(tmp_path).url == "http://other.example.org/debian"


def test_sources_list_for_image_uses_image_suite() -> None:
    mirror = DebianMirror("http://mirror.example.org/debian", "http://security.example.org/ds", True)
    assert mirror.sources_list("trixie").splitlines() == [
        "deb http://mirror.example.org/debian trixie main",
        "deb http://mirror.example.org/debian trixie-updates main",
        "deb http://security.example.org/ds trixie-security main",
    ]


# ------------------------------------------------------------------ discovery


def test_discovery_and_parents(repo: Path) -> None:
    recipes = discover_images(repo / "images")
    assert set(recipes) == {"debian", "base", "mta", "dns"}
    assert recipes["debian"].parent is None
    assert recipes["base"].parent == "debian"
    assert recipes["mta"].parent == "base"
    assert recipes["dns"].extra_paths == ("testbed/__init__.py", "testbed/dnsserver")


def test_build_order_is_parents_first(repo: Path) -> None:
    recipes = discover_images(repo / "images")
    assert resolve_order(recipes, ["mta"]) == ["debian", "base", "mta"]
    order = resolve_order(recipes)
    assert order.index("debian") < order.index("base") < order.index("dns")
    with pytest.raises(ImageError, match="unknown image"):
        resolve_order(recipes, ["nope"])


@pytest.mark.parametrize("text,parent", [
    ("ARG SUITE\nFROM testbed/base:${SUITE}\n", "base"),
    ("# comment\n\nARG SUITE=bookworm\nFROM testbed/base:$SUITE AS build\n", "base"),
    ("ARG SUITE\nFROM --platform=linux/amd64 \\\n  testbed/x-y_1:${SUITE}\n", "x-y_1"),
])
def test_parse_parent(text: str, parent: str) -> None:
    assert parse_parent(text) == parent


@pytest.mark.parametrize("text,msg", [
    ("FROM testbed/base:${SUITE}\n", "ARG SUITE"),
    ("ARG SUITE\nFROM debian:bookworm\n", "must be testbed/"),
    ("ARG SUITE\nFROM testbed/base:bookworm\n", "must be testbed/"),
    ("ARG SUITE\nRUN true\n", "no FROM"),
])
def test_parse_parent_rejects(text: str, msg: str) -> None:
    with pytest.raises(ImageError, match=msg):
        parse_parent(text)


def test_all_recipe_problems_reported_together(repo: Path) -> None:
    write(repo / "images/bad1/Dockerfile", "ARG SUITE\nFROM alpine:3\n")
    write(repo / "images/bad2/Dockerfile", dockerfile("ghost"))
    write(repo / "images/bad3/Dockerfile", dockerfile("base"))
    write(repo / "images/bad3/context.txt", "missing/file.py\n/etc/passwd\n../outside\n")
    write(repo / "images/debian/Dockerfile", dockerfile("base"))
    with pytest.raises(ImageError) as err:
        discover_images(repo / "images")
    text = str(err.value)
    for needle in ("bad1", "ghost", "missing/file.py", "/etc/passwd", "../outside", "reserved"):
        assert needle in text


def test_cycle_detected(repo: Path) -> None:
    write(repo / "images/a/Dockerfile", dockerfile("b"))
    write(repo / "images/b/Dockerfile", dockerfile("a"))
    with pytest.raises(ImageError, match="cycle"):
        discover_images(repo / "images")


def test_real_repository_images_discover() -> None:
    recipes = discover_images(REPO / "images")
    assert {"debian", "base", "dns", "postfix", "client"} <= set(recipes)
    assert all(recipes[n].parent == "base" for n in ("dns", "postfix", "client"))
    names = [e.arcname for e in context_entries(recipes["dns"])]
    assert "testbed/__init__.py" in names
    assert "testbed/dnsserver/__init__.py" in names
    assert not any(n.startswith("testbed/images") for n in names)


# ----------------------------------------------------------- build context


def test_context_entries_layout(repo: Path) -> None:
    write(repo / "testbed/dnsserver/__pycache__/zone.cpython-311.pyc", "junk")
    dns = discover_images(repo / "images")["dns"]
    names = [e.arcname for e in context_entries(dns)]
    assert names == sorted(names)
    assert names == [
        "Dockerfile", "context.txt", "testbed/__init__.py",
        "testbed/dnsserver/__init__.py", "testbed/dnsserver/zone.py",
    ]


def test_context_name_clash_is_an_error(repo: Path) -> None:
    write(repo / "images/dns/testbed/__init__.py", "clash\n")
    dns = discover_images(repo / "images")["dns"]
    with pytest.raises(ImageError, match="comes from both"):
        context_entries(dns)


def test_context_tar_is_reproducible_with_normalised_modes(repo: Path) -> None:
    base = discover_images(repo / "images")["base"]
    blobs = []
    for _ in range(2):
        buf = io.BytesIO()
        write_context_tar(base, buf)
        blobs.append(buf.getvalue())
    assert blobs[0] == blobs[1]
    with tarfile.open(fileobj=io.BytesIO(blobs[0])) as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert members["tb-init"].mode == 0o755
        assert members["Dockerfile"].mode == 0o644
        assert members["Dockerfile"].mtime == 0
        member = tar.extractfile("tb-init")
        assert member is not None and member.read() == b"#!/bin/sh\n"


# ---------------------------------------------------------------- hashes


def test_hash_is_stable(repo: Path) -> None:
    assert hashes(repo) == hashes(repo)


def test_hash_depends_on_suite(repo: Path) -> None:
    a, b = hashes(repo, "bookworm"), hashes(repo, "trixie")
    assert all(a[n] != b[n] for n in a)


def test_dockerfile_change_propagates_to_children_only(repo: Path) -> None:
    before = hashes(repo)
    write(repo / "images/base/Dockerfile", dockerfile("debian", "COPY tb-init /y\n"))
    after = hashes(repo)
    assert after["debian"] == before["debian"]
    assert after["base"] != before["base"]
    assert after["mta"] != before["mta"]  # parent hash propagates
    assert after["dns"] != before["dns"]


def test_sibling_change_does_not_touch_others(repo: Path) -> None:
    before = hashes(repo)
    write(repo / "images/mta/Dockerfile", dockerfile("base", "RUN false\n"))
    after = hashes(repo)
    assert after["mta"] != before["mta"]
    assert {n: after[n] for n in ("debian", "base", "dns")} == {n: before[n] for n in ("debian", "base", "dns")}


def test_context_file_change_and_addition_change_hash(repo: Path) -> None:
    h0 = hashes(repo)["dns"]
    write(repo / "testbed/dnsserver/zone.py", "ZONE = 2\n")
    h1 = hashes(repo)["dns"]
    write(repo / "testbed/dnsserver/extra.py", "\n")
    h2 = hashes(repo)["dns"]
    assert len({h0, h1, h2}) == 3


def test_mode_change_changes_hash_but_umask_noise_does_not(repo: Path) -> None:
    h0 = hashes(repo)["base"]
    (repo / "images/base/Dockerfile").chmod(0o664)  # group-writable checkout: same image
    assert hashes(repo)["base"] == h0
    (repo / "images/base/tb-init").chmod(0o644)  # lost the executable bit: different image
    assert hashes(repo)["base"] != h0


def test_caches_do_not_change_hash(repo: Path) -> None:
    h0 = hashes(repo)["dns"]
    write(repo / "testbed/dnsserver/__pycache__/zone.cpython-311.pyc", "junk")
    write(repo / "images/dns/Dockerfile~", "editor backup")
    assert hashes(repo)["dns"] == h0


PULLED = BaseSource.registry("debian:bookworm", "sha256:" + "a" * 64)


def test_debootstrap_hash_is_what_it_was_before_registries() -> None:
    """Pinned: a change here rebuilds every machine's images, so it must be deliberate
    (bump DEBIAN_RECIPE_VERSION or change the rootfs data, then update this value)."""
    recipes = discover_images(REPO / "images")
    debootstrap = BaseSource.debootstrap("debian:bookworm")
    assert content_hashes(recipes, ["debian"], "bookworm", debootstrap)["debian"].startswith("2cbdbf2941a9")
    assert content_hashes(recipes, ["debian"], "bookworm") == content_hashes(recipes, ["debian"], "bookworm", debootstrap)


def test_registry_hash_covers_reference_and_pulled_image(repo: Path) -> None:
    recipes = discover_images(repo / "images")
    pulled = content_hashes(recipes, None, "bookworm", PULLED)
    assert pulled == content_hashes(recipes, None, "bookworm", PULLED)
    other_id = BaseSource.registry(PULLED.reference, "sha256:" + "b" * 64)
    other_ref = BaseSource.registry("mirror.example:5000/debian:bookworm", PULLED.pulled_id)
    variants = [hashes(repo), pulled, content_hashes(recipes, None, "bookworm", other_id),
                content_hashes(recipes, None, "bookworm", other_ref)]
    for name in ("debian", "base", "dns"):  # a changed upstream image rebuilds everything on it
        assert len({v[name] for v in variants}) == len(variants)


def test_registry_hash_covers_packages(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipes = discover_images(repo / "images")
    h0 = content_hashes(recipes, ["debian"], "bookworm", PULLED)
    monkeypatch.setattr(debianrecipe, "DEBOOTSTRAP_PACKAGES", (*debianrecipe.DEBOOTSTRAP_PACKAGES, "less"))
    assert content_hashes(recipes, ["debian"], "bookworm", PULLED) != h0


def test_registry_build_context_has_the_rootfs_settings_and_packages() -> None:
    buf = io.BytesIO()
    write_registry_context(PULLED.pulled_id or "", buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
        member = tar.extractfile("Dockerfile")
        assert member is not None
        text = member.read().decode()
    assert text.startswith(f"FROM {PULLED.pulled_id}\n")
    assert all(pkg in text for pkg in debianrecipe.DEBOOTSTRAP_PACKAGES)
    assert "rm -rf /var/lib/apt/lists/*" in text and 'CMD ["/bin/bash"]' in text
    assert members["rootfs/usr/sbin/policy-rc.d"].mode == 0o755
    assert "rootfs/etc/apt/apt.conf.d/90testbed" in members
    assert "rootfs/etc/resolv.conf" not in members  # the engine's own, in every container


def test_debian_hash_ignores_mirror_but_not_packages(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h0 = hashes(repo)
    monkeypatch.setenv("TESTBED_MIRROR", "http://other.example.org/debian")
    assert hashes(repo) == h0
    monkeypatch.setattr(debianrecipe, "DEBOOTSTRAP_PACKAGES", (*debianrecipe.DEBOOTSTRAP_PACKAGES, "less"))
    h1 = hashes(repo)
    assert all(h1[n] != h0[n] for n in h0)  # everything sits on debian


# -------------------------------------------------------------- errors, lock


def test_build_error_message_has_name_suite_and_tail() -> None:
    err = ImageBuildError("postfix", "trixie", [f"line {i}" for i in range(3)], "step failed")
    assert "testbed/postfix:trixie" in str(err)
    assert "line 2" in str(err)
    assert err.image == "postfix" and err.suite == "trixie"


def test_follow_build_keeps_last_lines_and_raises() -> None:
    stream: list[dict[str, Any]] = [{"stream": f"Step {i}\n"} for i in range(100)]
    stream.append({"error": "The command '/bin/sh -c apt-get install nope' returned a non-zero code: 100"})
    seen: list[str] = []
    with pytest.raises(ImageBuildError) as err:
        I._follow_build(stream, "client", "bookworm", lambda n, m: seen.append(m))
    assert len(err.value.log_tail) == LOG_TAIL_LINES
    assert "non-zero code" in err.value.log_tail[-1]
    assert len(seen) == 101


def test_follow_build_returns_aux_id() -> None:
    stream: list[dict[str, Any]] = [
        {"stream": "ok\n"}, {"aux": {"ID": "sha256:abc"}}, {"stream": "Successfully built abc\n"},
    ]
    assert I._follow_build(stream, "x", "bookworm", I._no_progress) == "sha256:abc"


def test_import_result_parsing() -> None:
    assert rootfs._import_result_id('{"status":"sha256:0123"}\r\n') == "sha256:0123"
    with pytest.raises(ImageError, match="no space"):
        rootfs._import_result_id('{"error":"no space left"}\n')


def test_prerequisite_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rootfs.shutil, "which", lambda _: None)
    with pytest.raises(ImageError, match="apt-get install debootstrap"):
        rootfs.check_rootfs_prerequisites("bookworm")
    monkeypatch.setattr(rootfs.shutil, "which", lambda _: "/usr/sbin/debootstrap")
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageError, match="needs root"):
        rootfs.check_rootfs_prerequisites("bookworm")


def test_unknown_suite_rejected(repo: Path) -> None:
    with pytest.raises(ImageError, match="unknown suite"):
        I.ensure_images(["base"], "jessie", images_dir=repo / "images", client=object())


def test_build_lock_is_exclusive_across_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    probe = ("import fcntl,sys\nf=open(sys.argv[1])\n"
             "try: fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB)\nexcept BlockingIOError: sys.exit(3)\n")
    lock = tmp_path / "testbed" / "images.lock"
    with I.build_lock():
        held = subprocess.run([sys.executable, "-c", probe, str(lock)])
    free = subprocess.run([sys.executable, "-c", probe, str(lock)])
    assert (held.returncode, free.returncode) == (3, 0)


# ------------------------------------------------- ensure_images with a fake engine


class FakeAPI:
    """Just enough of docker's low-level API (images by id, with tags) for ensure_images."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any]] = {}
        self.builds: list[dict[str, Any]] = []
        self.removed: list[str] = []
        self.clock = 0
        self.timeout = 3600
        # The registry the engine can reach: reference -> content version (none by default,
        # like a machine without a registry); each version pulls as one image id.
        self.registry: dict[str, str] = {}
        self.pulled: dict[tuple[str, str], str] = {}
        self.probe_timeouts: list[float] = []
        # Builds run side by side in threads: the store changes under one lock.
        self.lock = threading.RLock()
        # Image names whose build fails at its Dockerfile step.
        self.failing: set[str] = set()
        self.failing_together: threading.Barrier | None = None

    def _get(self, ref: str) -> dict[str, Any]:
        for image in self.store.values():
            if ref == image["Id"] or ref in image["RepoTags"]:
                return image
        raise docker.errors.ImageNotFound(ref)

    def add(self, tag: str, labels: dict[str, str]) -> str:
        with self.lock:
            return self._add(tag, labels)

    def _add(self, tag: str, labels: dict[str, str]) -> str:
        self.clock += 1
        image_id = f"sha256:{self.clock:04d}"
        self.store[image_id] = {"Id": image_id, "Config": {"Labels": labels},
                                "Created": self.clock, "RepoTags": []}
        repo, name = tag.rsplit(":", 1)
        self.tag(image_id, repo, name)
        return image_id

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return self._get(ref)

    def tag(self, image: str, repository: str, tag: str, force: bool = False) -> bool:
        with self.lock:
            return self._tag(image, repository, tag)

    def _tag(self, image: str, repository: str, tag: str) -> bool:
        ref = f"{repository}:{tag}"
        for other in self.store.values():
            if ref in other["RepoTags"]:
                other["RepoTags"].remove(ref)
        self._get(image)["RepoTags"].append(ref)
        return True

    def images(self, filters: dict[str, list[str]]) -> list[dict[str, Any]]:
        wanted = dict(f.split("=", 1) for f in filters["label"])
        return [i for i in self.store.values()
                if wanted.items() <= (i["Config"]["Labels"] or {}).items()]

    def remove_image(self, ref: str) -> None:
        with self.lock:
            self._remove_image(ref)

    def _remove_image(self, ref: str) -> None:
        image = self._get(ref)
        self.removed.append(ref)
        if ref in image["RepoTags"]:
            image["RepoTags"].remove(ref)
        if ref == image["Id"] or not image["RepoTags"]:
            del self.store[image["Id"]]

    def inspect_distribution(self, ref: str) -> dict[str, Any]:
        self.probe_timeouts.append(self.timeout)
        if ref not in self.registry:
            raise docker.errors.APIError("500 Server Error", explanation="dial tcp: lookup registry: no such host")
        return {"Descriptor": {"digest": f"sha256:{self.registry[ref]}"}}

    def pull(self, repository: str, tag: str, stream: bool, decode: bool):
        ref = f"{repository}:{tag}"
        version = self.registry[ref]
        if (ref, version) not in self.pulled:
            self.pulled[ref, version] = self.add(ref, {})
        self.tag(self.pulled[ref, version], repository, tag)
        return iter([{"status": f"Pulling from {repository}"}, {"status": f"Digest: sha256:{version}"}])

    def build(self, **kw: Any):
        with tarfile.open(fileobj=kw["fileobj"]) as tar:
            kw["names"] = tar.getnames()
            member = tar.extractfile("Dockerfile")
            kw["dockerfile"] = member.read().decode() if member else ""
        with self.lock:
            self.builds.append(kw)
        if kw["labels"][I.LABEL_IMAGE] in self.failing:
            return self._failing_stream()
        image_id = self.add(kw["tag"], kw["labels"])
        return iter([{"stream": "Step 1/1\n"}, {"aux": {"ID": image_id}}])


    def _failing_stream(self):
        # Siblings that fail together: each reaches its error before either is reported.
        yield {"stream": "Step 1/1 : RUN false\n"}
        if self.failing_together:
            self.failing_together.wait()
        yield {"error": "returned a non-zero code: 1"}


class FakeClient:
    def __init__(self) -> None:
        self.api = FakeAPI()


REAL_BUILD_DEBIAN = rootfs.build_debian


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeClient:
    client = FakeClient()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    for name in ("TESTBED_BASE_SOURCE", "TESTBED_DEBIAN_IMAGE", ENV_PREFIX):
        monkeypatch.delenv(name, raising=False)

    def fake_debian(cl: FakeClient, suite: str, labels: dict[str, str], progress: Any) -> str:
        cl.api.builds.append({"tag": image_tag("debian", suite)})
        return cl.api.add(image_tag("debian", suite), labels)

    monkeypatch.setattr(I, "build_debian", fake_debian)
    return client


def built_tags(client: FakeClient) -> list[str]:
    return [b["tag"] for b in client.api.builds]


def test_ensure_builds_parents_first_then_is_a_no_op(repo: Path, fake: FakeClient) -> None:
    ids = I.ensure_images(["dns"], "bookworm", images_dir=repo / "images", client=fake)
    assert list(ids) == ["debian", "base", "dns"]
    assert built_tags(fake) == ["testbed/debian:bookworm", "testbed/base:bookworm", "testbed/dns:bookworm"]
    dns_build = fake.api.builds[-1]
    assert dns_build["buildargs"] == {"SUITE": "bookworm"}
    assert dns_build["network_mode"] == "host" and dns_build["pull"] is False
    assert dns_build["rm"] and dns_build["forcerm"]
    assert dns_build["labels"][I.LABEL_IMAGE] == "dns"
    assert dns_build["labels"][I.LABEL_SUITE] == "bookworm"
    assert "testbed/dnsserver/zone.py" in dns_build["names"]

    again = I.ensure_images(["dns"], "bookworm", images_dir=repo / "images", client=fake)
    assert again == ids
    assert len(fake.api.builds) == 3


def test_ensure_rebuilds_only_what_changed(repo: Path, fake: FakeClient) -> None:
    I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    fake.api.builds.clear()
    write(repo / "testbed/dnsserver/zone.py", "ZONE = 3\n")
    I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    assert built_tags(fake) == ["testbed/dns:bookworm"]


def test_switching_back_reuses_the_cached_build(repo: Path, fake: FakeClient) -> None:
    """Two checkouts with different inputs alternate on one engine without rebuilding."""
    first = I.ensure_images(["dns"], "bookworm", images_dir=repo / "images", client=fake)["dns"]
    write(repo / "testbed/dnsserver/zone.py", "ZONE = 3\n")
    I.ensure_images(["dns"], "bookworm", images_dir=repo / "images", client=fake)
    write(repo / "testbed/dnsserver/zone.py", "ZONE = 1\n")
    fake.api.builds.clear()
    messages: list[str] = []
    ids = I.ensure_images(["dns"], "bookworm", images_dir=repo / "images", client=fake,
                          progress=lambda n, m: messages.append(m))
    assert fake.api.builds == []
    assert ids["dns"] == first
    assert fake.api.inspect_image("testbed/dns:bookworm")["Id"] == first
    assert any("cached build" in m for m in messages)


def test_old_builds_are_pruned(repo: Path, fake: FakeClient) -> None:
    for i in range(6):
        write(repo / "testbed/dnsserver/zone.py", f"ZONE = {i + 10}\n")
        last = I.ensure_images(["dns"], "bookworm", images_dir=repo / "images", client=fake)["dns"]
    builds = I.builds_of(fake, "dns", "bookworm")
    assert len(builds) == I.CACHE_KEEP
    assert all(b["RepoTags"] for b in builds)
    assert builds[0]["Id"] == last
    assert "testbed/dns:bookworm" in builds[0]["RepoTags"]


def test_rebuild_forces_everything_without_cache(repo: Path, fake: FakeClient) -> None:
    I.ensure_images(["mta"], "trixie", images_dir=repo / "images", client=fake)
    fake.api.builds.clear()
    I.ensure_images(["mta"], "trixie", images_dir=repo / "images", client=fake, rebuild=True)
    assert built_tags(fake) == ["testbed/debian:trixie", "testbed/base:trixie", "testbed/mta:trixie"]
    assert all(b["nocache"] for b in fake.api.builds[1:])


def test_forced_rebuild_drops_the_build_it_replaced(repo: Path, fake: FakeClient) -> None:
    first = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)["base"]
    I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake, rebuild=True)
    assert first not in fake.api.store  # untagged now: nothing could ever reuse it


def test_prune_leaves_a_young_untagged_stage_of_a_running_build(repo: Path, fake: FakeClient) -> None:
    """A multi-stage build's intermediate image is untagged and carries its base's labels."""
    base = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)["base"]
    labels = dict(fake.api.inspect_image(base)["Config"]["Labels"])
    stage = fake.api.add("stage:tmp", labels)
    fake.api.store[stage]["RepoTags"] = []
    fake.api.store[stage]["Created"] = time.time()  # just built, by a build still running
    I.prune_cache(fake, "base", "bookworm")
    assert stage in fake.api.store
    fake.api.store[stage]["Created"] = time.time() - I.UNTAGGED_GRACE_S - 1
    I.prune_cache(fake, "base", "bookworm")
    assert stage not in fake.api.store and base in fake.api.store


def test_image_status(repo: Path, fake: FakeClient) -> None:
    I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    fake.api.inspect_image("testbed/base:bookworm")["Config"]["Labels"] = {I.LABEL_HASH: "old"}
    rows = I.image_status(None, "bookworm", images_dir=repo / "images", client=fake)
    by = {r.name: r for r in rows}
    assert by["debian"] == ("debian", "testbed/debian:bookworm", True, True)
    assert by["base"].present and not by["base"].up_to_date
    assert not by["mta"].present and not by["mta"].up_to_date


# --------------------------------------------------- the base image source, fake engine


def test_no_registry_falls_back_to_debootstrap_with_one_visible_line(repo: Path, fake: FakeClient) -> None:
    messages: list[str] = []
    I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake,
                    progress=lambda n, m: messages.append(m))
    assert built_tags(fake) == ["testbed/debian:bookworm", "testbed/base:bookworm"]
    assert "dockerfile" not in fake.api.builds[0]  # the debootstrap path, not a Dockerfile
    assert [m for m in messages if m.startswith("source:")] == [
        "source: debootstrap; registry image debian:bookworm not available (dial tcp: lookup registry: no such host)"
    ]
    assert fake.api.probe_timeouts == [REGISTRY_TIMEOUT] and fake.api.timeout == 3600


def test_registry_pull_builds_debian_with_labels_then_skips(repo: Path, fake: FakeClient) -> None:
    fake.api.registry["debian:bookworm"] = "v1"
    ids = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    pulled_id = fake.api.inspect_image("debian:bookworm")["Id"]
    debian = fake.api.builds[0]
    assert debian["tag"] == "testbed/debian:bookworm"
    assert debian["dockerfile"].startswith(f"FROM {pulled_id}\n")
    assert debian["labels"] == {
        I.LABEL_IMAGE: "debian", I.LABEL_SUITE: "bookworm", I.LABEL_HASH: debian["labels"][I.LABEL_HASH],
        "testbed.base-source": "registry", "testbed.base-reference": "debian:bookworm",
        "testbed.base-image-id": pulled_id,
    }
    assert debian["pull"] is False and debian["network_mode"] == "host"
    again = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    assert again == ids and len(fake.api.builds) == 2
    assert all(r.up_to_date for r in I.image_status(["base"], "bookworm", images_dir=repo / "images", client=fake))


def test_changed_upstream_image_rebuilds_debian_and_children(repo: Path, fake: FakeClient) -> None:
    fake.api.registry["debian:bookworm"] = "v1"
    I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    fake.api.builds.clear()
    fake.api.registry["debian:bookworm"] = "v2"
    I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    assert built_tags(fake) == ["testbed/debian:bookworm", "testbed/base:bookworm"]


def test_offline_after_a_pull_keeps_the_images(repo: Path, fake: FakeClient) -> None:
    fake.api.registry["debian:bookworm"] = "v1"
    ids = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    fake.api.registry.clear()
    messages: list[str] = []
    again = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake,
                            base=BaseSettings(SourceKind.REGISTRY), progress=lambda n, m: messages.append(m))
    assert again == ids and len(fake.api.builds) == 2
    assert any("keeping the image pulled before" in m for m in messages)


def test_forced_registry_without_registry_is_one_error_and_builds_nothing(repo: Path, fake: FakeClient) -> None:
    with pytest.raises(ImageSourceError, match="TESTBED_BASE_SOURCE=registry, but cannot pull debian:bookworm"):
        I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake,
                        base=BaseSettings(SourceKind.REGISTRY))
    assert fake.api.builds == []


def test_forced_debootstrap_does_not_ask_the_registry(repo: Path, fake: FakeClient) -> None:
    fake.api.registry["debian:bookworm"] = "v1"
    I.ensure_images(["debian"], "bookworm", images_dir=repo / "images", client=fake,
                    base=BaseSettings(SourceKind.DEBOOTSTRAP))
    assert fake.api.probe_timeouts == [] and "dockerfile" not in fake.api.builds[0]


def test_configured_repository_is_pulled(repo: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TESTBED_DEBIAN_IMAGE", "127.0.0.1:5000/mirror/debian")
    fake.api.registry["127.0.0.1:5000/mirror/debian:trixie"] = "v1"
    I.ensure_images(["debian"], "trixie", images_dir=repo / "images", client=fake)
    labels = fake.api.inspect_image("testbed/debian:trixie")["Config"]["Labels"]
    assert labels["testbed.base-reference"] == "127.0.0.1:5000/mirror/debian:trixie"


def test_no_registry_and_no_root_names_every_fix(repo: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(I, "build_debian", REAL_BUILD_DEBIAN)
    monkeypatch.setattr(rootfs.shutil, "which", lambda _: "/usr/sbin/debootstrap")
    monkeypatch.setattr(rootfs.os, "geteuid", lambda: 1000)
    with pytest.raises(ImageSourceError) as err:
        I.ensure_images(["debian"], "bookworm", images_dir=repo / "images", client=fake)
    text = str(err.value)
    for needle in ("registry image debian:bookworm not available", "needs root", "TESTBED_DEBIAN_IMAGE=",
                   "images --build --suite bookworm"):
        assert needle in text
    assert "images build" not in text  # the old hint named a command that does not exist


def test_no_apt_sources_names_every_fix(repo: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(I, "build_debian", REAL_BUILD_DEBIAN)
    monkeypatch.setattr(rootfs, "check_rootfs_prerequisites", lambda suite: None)
    monkeypatch.setattr(rootfs, "find_mirror", lambda: select_mirror([]))
    with pytest.raises(ImageSourceError, match="no Debian mirror found.*TESTBED_MIRROR.*Fixes: either"):
        I.ensure_images(["debian"], "bookworm", images_dir=repo / "images", client=fake)


def test_image_prefix_keeps_images_apart(repo: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    theirs = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    monkeypatch.setenv(ENV_PREFIX, "tb-test")
    for i in range(I.CACHE_KEEP + 2):  # enough builds to make prune_cache remove some
        write(repo / "images/base/tb-init", f"#!/bin/sh\n# {i}\n", 0o755)
        ours = I.ensure_images(["base"], "bookworm", images_dir=repo / "images", client=fake)
    assert ours["debian"] != theirs["debian"]
    assert fake.api.builds[-1]["tag"] == "tb-test/base:bookworm"
    assert fake.api.builds[-1]["dockerfile"].startswith("ARG SUITE\nFROM tb-test/debian:${SUITE}")
    monkeypatch.delenv(ENV_PREFIX)
    for name in ("debian", "base"):
        assert fake.api.inspect_image(f"testbed/{name}:bookworm")["Id"] == theirs[name]


def test_bad_image_prefix_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV_PREFIX, "Bad/Prefix")
    with pytest.raises(ImageError, match="TESTBED_IMAGE_PREFIX='Bad/Prefix'"):
        image_tag("debian", "bookworm")


def test_debootstrap_script_uses_sid_for_a_suite_newer_than_debootstrap(tmp_path: Path) -> None:
    from testbed.rootfs import debootstrap_script

    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "sid").write_text("")
    (scripts / "bookworm").write_text("")
    assert debootstrap_script("bookworm", scripts) == ""  # its own script
    assert debootstrap_script("forky", scripts) == str(scripts / "sid")
    assert debootstrap_script("duke", scripts) is None  # not a suite the builder knows
    assert debootstrap_script("forky", tmp_path / "none") == ""  # no script directory: debootstrap decides


# ------------------------------------------------------------- builds side by side


def test_siblings_build_side_by_side_with_the_same_results(repo: Path, fake: FakeClient) -> None:
    threads: dict[str, str] = {}
    real_build = fake.api.build

    def build(**kw: Any):
        threads[kw["labels"][I.LABEL_IMAGE]] = threading.current_thread().name
        return real_build(**kw)

    fake.api.build = build  # type: ignore[method-assign]
    ids = I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    assert list(ids) == resolve_order(discover_images(repo / "images"))
    assert sorted(built_tags(fake)[2:]) == ["testbed/dns:bookworm", "testbed/mta:bookworm"]
    # base alone runs in the caller's thread; its children in the pool
    assert threads["base"] == threading.current_thread().name
    assert threads["dns"] != threads["base"] and threads["mta"] != threads["base"]
    for name in ("dns", "mta"):
        assert I.cache_tag(name, "bookworm", fake.api.inspect_image(ids[name])["Config"]["Labels"][I.LABEL_HASH]) \
            in fake.api.inspect_image(ids[name])["RepoTags"]


def test_one_build_job_builds_one_after_another(repo: Path, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(I.ENV_BUILD_JOBS, "1")
    assert I.build_jobs() == 1
    I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    assert len(fake.api.builds) == 4


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_build_jobs_is_a_clear_error(value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(I.ENV_BUILD_JOBS, value)
    with pytest.raises(ImageError, match="TESTBED_BUILD_JOBS"):
        I.build_jobs()


def test_one_failed_sibling_raises_its_own_build_error(repo: Path, fake: FakeClient) -> None:
    fake.api.failing = {"mta"}
    with pytest.raises(ImageBuildError) as err:
        I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    assert err.value.image == "mta" and "non-zero code" in str(err.value)
    assert fake.api.images({"label": [f"{I.LABEL_IMAGE}=mta"]}) == []


def test_every_failed_sibling_is_reported(repo: Path, fake: FakeClient) -> None:
    fake.api.failing = {"mta", "dns"}
    fake.api.failing_together = threading.Barrier(2, timeout=30)  # a hang guard, not a speed check
    with pytest.raises(I.ImageBuildsFailed) as err:
        I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    assert sorted(err.value.failures) == ["dns", "mta"]
    assert "testbed/dns:bookworm failed" in str(err.value) and "testbed/mta:bookworm failed" in str(err.value)


def test_a_failed_parent_builds_no_child(repo: Path, fake: FakeClient) -> None:
    fake.api.failing = {"base"}
    with pytest.raises(ImageBuildError, match="testbed/base:bookworm"):
        I.ensure_images(None, "bookworm", images_dir=repo / "images", client=fake)
    assert built_tags(fake) == ["testbed/debian:bookworm", "testbed/base:bookworm"]


def test_a_stopped_build_stops_at_the_next_line_and_closes_its_stream() -> None:
    stop = threading.Event()
    closed: list[bool] = []

    def stream():
        try:
            yield {"stream": "Step 1/2\n"}
            stop.set()  # a sibling failed meanwhile
            yield {"stream": "Step 2/2\n"}
            yield {"aux": {"ID": "sha256:never"}}
        finally:
            closed.append(True)

    seen: list[str] = []
    with pytest.raises(Cancelled):
        I._follow_build(stream(), "dns", "bookworm", lambda n, m: seen.append(m), stop=stop)
    assert closed == [True]
    assert seen == ["Step 1/2", "build stopped"]


def test_stale_rootfs_scratch_of_a_dead_build_is_removed_and_a_live_ones_kept(tmp_path: Path, monkeypatch) -> None:
    from testbed.rootfs import SCRATCH_OWNER, SCRATCH_PREFIX, remove_stale_scratch
    from testbed.owner import process_label

    monkeypatch.setenv("TESTBED_TMPDIR", str(tmp_path))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead, live, unowned = (tmp_path / f"{SCRATCH_PREFIX}{n}" for n in ("dead", "live", "unowned"))
    for d in (dead, live, unowned):
        (d / "rootfs" / "etc").mkdir(parents=True)
    (dead / SCRATCH_OWNER).write_text(process_label(child.pid))
    (live / SCRATCH_OWNER).write_text(process_label())
    (tmp_path / "not-ours").mkdir()
    assert sorted(remove_stale_scratch()) == sorted([dead, unowned])
    assert live.exists() and (tmp_path / "not-ours").exists() and not dead.exists()
