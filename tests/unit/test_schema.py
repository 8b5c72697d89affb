"""`testbed schema topology`: the JSON Schema editors use accepts every bundled topology and refuses bad keys.

And docs/schemas/ publishes it beside result.json's and matrix.json's (test_resultschema.py), as printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

from testbed.cli import main
from testbed.model import topology_json_schema
from testbed.source import load_yaml

REPO = Path(__file__).resolve().parents[2]
TOPOLOGIES = sorted((REPO / "topologies").rglob("*.yaml"))


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = topology_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)  # a well-formed 2020-12 schema
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("path", [p for p in TOPOLOGIES if "matrices" not in p.parts], ids=lambda p: p.stem)
def test_every_bundled_topology_satisfies_the_schema(validator, path: Path) -> None:
    data = load_yaml(path).data
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(data)]
    assert not errors, errors


def test_the_schema_refuses_what_validate_refuses_key_by_key(validator) -> None:
    data = load_yaml(TOPOLOGIES[0]).data
    data["timing"] = {"retry": "soon"}
    data["hosts"]["extra"] = {"kind": "mta", "segmnet": "x"}
    messages = [e.message for e in validator.iter_errors(data)]
    assert any("soon" in m for m in messages)
    assert any("segmnet" in m for m in messages)


def test_durations_may_carry_units(validator) -> None:
    data = load_yaml(TOPOLOGIES[0]).data
    data["timing"] = {"retry": "500ms", "max_retry": 30, "settle_timeout": "2m"}
    assert not list(validator.iter_errors(data))


def test_the_cli_prints_it() -> None:
    result = CliRunner().invoke(main, ["schema", "topology"])
    assert result.exit_code == 0
    assert json.loads(result.output)["$schema"].endswith("2020-12/schema")


@pytest.mark.parametrize("what", ["topology", "result", "matrix", "baseline"])
def test_the_published_schemas_are_up_to_date(what: str) -> None:
    printed = CliRunner().invoke(main, ["schema", what])
    assert printed.exit_code == 0, printed.output
    published = REPO / "docs" / "schemas" / f"{what}.schema.json"
    assert published.is_file() and published.read_text() == printed.output, (
        f"{published.relative_to(REPO)} is out of date with the models; regenerate it with "
        f"`testbed schema {what} > docs/schemas/{what}.schema.json`")
