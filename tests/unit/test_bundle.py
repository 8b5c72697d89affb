"""`testbed bundle`: a run directory in one tar.gz with a README built from its result.json."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed.bundle import BundleError, write_bundle
from testbed.cli import main


def run_dir(tmp_path: Path) -> Path:
    d = tmp_path / "20261202-063955-relay-bounce-fixed-a16c5a6a"
    (d / "logs" / "relay").mkdir(parents=True)
    (d / "logs" / "relay" / "mail.log").write_text("Dec  2 06:39:58 relay postfix/smtpd[1]: connect from x\n")
    (d / "result.json").write_text(json.dumps({
        "topology": "relay-bounce", "title": "An IPv4-only relay", "study": "slides 9-14", "variant": "fixed",
        "run_id": "a16c5a6a", "suite": "bookworm", "software": {"relay": "postfix"},
        "versions": {"postfix": "3.7.11"}, "engine": "Docker 20.10.24 (API 1.41)", "passed": False, "error": None,
        "expectations": [{"kind": "message", "description": "the bounce returns", "status": "fail",
                          "detail": "state: expected returned, got lost"},
                         {"kind": "log", "description": "exim only", "status": "n/a", "detail": "applies only when"}],
    }))
    return d


def test_the_bundle_holds_the_run_and_says_what_it_was(tmp_path: Path) -> None:
    d = run_dir(tmp_path)
    target = write_bundle(d)
    assert target == d.with_name(d.name + ".tar.gz")
    with tarfile.open(target) as tar:
        names = tar.getnames()
        readme = tar.extractfile(f"{d.name}/README.md").read().decode()
    assert names[0] == f"{d.name}/README.md"
    assert f"{d.name}/logs/relay/mail.log" in names and f"{d.name}/result.json" in names
    assert "topology: `relay-bounce`" in readme and "variant: `fixed`" in readme
    assert "postfix 3.7.11" in readme and "Docker 20.10.24 (API 1.41)" in readme
    assert "did NOT behave as expected (0/1 expectations hold)" in readme
    assert "- FAIL the bounce returns: state: expected returned, got lost" in readme
    assert "`dns-queries.jsonl`" in readme  # how to read it


def test_not_a_run_directory_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="has no result.json"):
        write_bundle(tmp_path)
    (tmp_path / "result.json").write_text("[1, 2")
    with pytest.raises(BundleError, match="cannot be read as JSON"):
        write_bundle(tmp_path)
    result = CliRunner().invoke(main, ["bundle", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "is not a directory" in result.output and "Traceback" not in result.output


def test_the_cli_writes_where_it_is_told(tmp_path: Path) -> None:
    d = run_dir(tmp_path)
    out = tmp_path / "bug-1234.tar.gz"
    result = CliRunner().invoke(main, ["bundle", str(d), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and str(out) in result.output
