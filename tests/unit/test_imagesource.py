"""Unit tests for testbed.imagesource: where testbed/debian comes from. Pure: no Docker."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed import imagesource as S
from testbed.imagesource import BaseSettings, BaseSource, ImageSourceError, SourceKind

REF = "debian:bookworm"
UNREACHABLE = S.RegistryFailure(REF, "unreachable", "dial tcp: lookup registry: no such host")


# ----------------------------------------------------------------------- settings


def test_defaults_are_auto_and_debian() -> None:
    settings = S.settings_from_env({})
    assert settings == BaseSettings(SourceKind.AUTO, "debian")
    assert settings.reference("trixie") == "debian:trixie"


def test_environment_sets_source_and_repository() -> None:
    env = {S.ENV_SOURCE: " Registry ", S.ENV_REPOSITORY: "registry.example:5000/library/debian"}
    settings = S.settings_from_env(env)
    assert settings.source is SourceKind.REGISTRY
    assert settings.reference("bookworm") == "registry.example:5000/library/debian:bookworm"


def test_cli_values_win_over_the_environment() -> None:
    env = {S.ENV_SOURCE: "registry", S.ENV_REPOSITORY: "one.example/debian"}
    settings = S.settings_from_env(env, source="debootstrap", repository="two.example:5000/debian")
    assert settings == BaseSettings(SourceKind.DEBOOTSTRAP, "two.example:5000/debian")


def test_unknown_source_names_the_choices() -> None:
    with pytest.raises(ImageSourceError, match=r"TESTBED_BASE_SOURCE='pull': expected auto\|registry\|debootstrap"):
        S.settings_from_env({S.ENV_SOURCE: "pull"})


@pytest.mark.parametrize("repo", [
    "debian", "library/debian", "registry.example:5000/library/debian", "localhost/deb-ian_x/b.c",
    "127.0.0.1:5000/mirror/debian", "Registry.Example/debian",
])
def test_valid_repositories(repo: str) -> None:
    assert S.check_repository(f" {repo} ") == repo


@pytest.mark.parametrize("repo,needle", [
    ("debian:bookworm", "without a tag"),
    ("registry.example:5000/library/debian:12", "without a tag"),
    ("debian@sha256:abcd", "without a tag"),
    ("registry.example:5000/Library/Debian", "not a valid image repository"),
    ("my debian", "not a valid image repository"),
    ("", "not a valid image repository"),
    ("debian/", "not a valid image repository"),
])
def test_invalid_repositories_are_one_clear_error(repo: str, needle: str) -> None:
    with pytest.raises(ImageSourceError, match=needle) as err:
        S.check_repository(repo)
    assert S.ENV_REPOSITORY in str(err.value)


# ---------------------------------------------------------------- classification


@pytest.mark.parametrize("status,detail,kind", [
    (500, 'Get "https://registry.example/v2/": dial tcp: lookup registry.example: no such host', "unreachable"),
    (500, "dial tcp 127.0.0.1:5999: connect: connection refused", "unreachable"),
    (None, "no answer within 10 s (ReadTimeout)", "unreachable"),
    (404, "manifest unknown: manifest unknown", "not-found"),
    (500, "pull access denied for nope, repository does not exist", "denied"),
    (401, "unauthorized: authentication required", "denied"),
    (400, "invalid reference format: repository name must be lowercase", "bad-reference"),
])
def test_registry_errors_are_sorted_by_what_fixes_them(status: int | None, detail: str, kind: str) -> None:
    assert S.classify_registry_error(REF, status, detail).kind == kind


# ------------------------------------------------------------------ the decision


def test_a_working_probe_means_pull() -> None:
    assert S.source_after_probe(BaseSettings(), "bookworm", None, None) is None


def test_auto_falls_back_to_debootstrap_and_says_why() -> None:
    source = S.source_after_probe(BaseSettings(), "bookworm", UNREACHABLE, None)
    assert source is not None and source.kind is SourceKind.DEBOOTSTRAP
    assert "no such host" in source.describe() and source.describe().startswith("source: debootstrap")


@pytest.mark.parametrize("failure,needles", [
    (UNREACHABLE, ["cannot pull debian:bookworm", "no such host"]),
    (S.RegistryFailure(REF, "not-found", "manifest unknown"), ["has no image debian:bookworm", "push"]),
    (S.RegistryFailure("reg.example:5000/debian:bookworm", "denied", "unauthorized"),
     ["docker login reg.example:5000"]),
    (S.RegistryFailure(REF, "bad-reference", "invalid reference format"), ["rejects the reference"]),
])
def test_forced_registry_failure_names_the_fixes(failure: S.RegistryFailure, needles: list[str]) -> None:
    with pytest.raises(ImageSourceError) as err:
        S.source_after_probe(BaseSettings(SourceKind.REGISTRY), "bookworm", failure, None)
    text = str(err.value)
    for needle in [*needles, "TESTBED_BASE_SOURCE=registry", "TESTBED_DEBIAN_IMAGE=", "images --build --suite bookworm"]:
        assert needle in text


@pytest.mark.parametrize("setting", [SourceKind.AUTO, SourceKind.REGISTRY])
def test_an_earlier_pull_of_the_same_reference_is_kept_while_offline(setting: SourceKind) -> None:
    recorded = BaseSource.registry(REF, "sha256:" + "1" * 64)
    source = S.source_after_probe(BaseSettings(setting), "bookworm", UNREACHABLE, recorded)
    assert source is not None and source.is_registry and source.pulled_id == recorded.pulled_id
    assert "keeping the image pulled before" in source.note


def test_an_earlier_pull_of_another_reference_is_not_kept() -> None:
    recorded = BaseSource.registry("mirror.example/debian:bookworm", "sha256:" + "1" * 64)
    source = S.source_after_probe(BaseSettings(), "bookworm", UNREACHABLE, recorded)
    assert source is not None and source.kind is SourceKind.DEBOOTSTRAP


def test_offline_source_for_status() -> None:
    pulled = BaseSource.registry(REF, "sha256:" + "2" * 64)
    assert S.offline_source(BaseSettings(), "bookworm", pulled) == pulled
    assert S.offline_source(BaseSettings(), "bookworm", None).kind is SourceKind.DEBOOTSTRAP
    assert S.offline_source(BaseSettings(SourceKind.DEBOOTSTRAP), "bookworm", pulled).kind is SourceKind.DEBOOTSTRAP
    due = S.offline_source(BaseSettings(SourceKind.REGISTRY), "bookworm", None)
    assert due.is_registry and due.pulled_id is None


def test_labels_record_the_source_for_later_runs() -> None:
    pulled = BaseSource.registry("127.0.0.1:5000/x/debian:trixie", "sha256:" + "3" * 64)
    assert S.recorded_source(pulled.labels()) == pulled
    assert S.recorded_source(BaseSource.debootstrap(REF).labels()) is None
    assert S.recorded_source({}) is None  # debootstrap images from before registries


# -------------------------------------------------------------------- messages


def test_debootstrap_unavailable_message_has_the_reason_and_every_fix() -> None:
    source = S.source_after_probe(BaseSettings(), "trixie", S.RegistryFailure("debian:trixie", "unreachable", "no such host"), None)
    assert source is not None
    text = S.debootstrap_unavailable_message("trixie", "needs root.", source)
    assert text.startswith("registry image debian:trixie not available (no such host), and cannot build")
    assert "needs root. Fixes:" in text
    assert "TESTBED_DEBIAN_IMAGE=registry.example:5000/library/debian" in text
    assert "apt-get install debootstrap" in text and "images --build --suite trixie" in text


def test_sudo_hint_names_the_venv_script(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/testbed").write_text("#!/bin/sh\n")
    hint = S.sudo_hint("bookworm", str(tmp_path / "bin/python"))
    assert hint == f"sudo {tmp_path}/bin/testbed images --build --suite bookworm"
    assert S.sudo_hint("bookworm", str(tmp_path / "python")) == "sudo testbed images --build --suite bookworm"
