"""Loading and validating topologies: variants, overrides, and error reports."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from testbed.errors import TopologyError
from testbed.model import SendStep, load_topology, validate_file

TOPOLOGIES = Path(__file__).resolve().parents[2] / "topologies"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "t.yaml"
    path.write_text(textwrap.dedent(text))
    return path


MINIMAL = """
name: tiny
segments:
  lan: {family: dual}
hosts:
  dns: {kind: dns, segment: lan}
  mx: {kind: mta, segment: lan, fqdn: mx.example.net}
  c: {kind: client, segment: lan}
domains:
  example.net: {mx: {mx: 10}, mailboxes: [u]}
scenario:
  - send: {id: m1, from: u@example.net, to: u@example.net, via: mx}
  - settle:
expect:
  - {message: m1, state: delivered}
"""


@pytest.mark.parametrize("name", sorted(p.name for p in TOPOLOGIES.glob("*.yaml")))
def test_shipped_topologies_validate(name: str) -> None:
    assert validate_file(TOPOLOGIES / name)


def test_minimal_defaults(tmp_path: Path) -> None:
    topo = load_topology(write(tmp_path, MINIMAL))
    assert topo.variant == "default"
    assert topo.host_stack("mx") == "dual"
    assert topo.software_of("mx") == "postfix"
    assert topo.fqdn_of("c") == "c.tiny.test"
    assert topo.timing.retry == 10.0
    assert topo.mailbox_host("example.net") == "mx"
    assert isinstance(topo.scenario[0], SendStep)
    assert topo.scenario[0].send.to == ["u@example.net"]


def test_variant_patch_merges_and_replaces_lists() -> None:
    broken = load_topology(TOPOLOGIES / "mx-routing.yaml")
    fixed = load_topology(TOPOLOGIES / "mx-routing.yaml", "fixed")
    assert broken.variant == "broken" and fixed.variant == "fixed"
    assert broken.hosts["mx20"].segment == "v6net"
    assert fixed.hosts["mx20"].segment == "core"
    assert fixed.hosts["mx20"].fqdn == "mx20.brainbird.nl"  # untouched keys survive the merge
    assert len(fixed.expect) != len(broken.expect)


def test_unknown_variant_is_a_clear_error() -> None:
    with pytest.raises(TopologyError, match="no variant 'nope'.*broken, fixed"):
        load_topology(TOPOLOGIES / "mx-routing.yaml", "nope")


def test_overrides_set_dotted_paths() -> None:
    topo = load_topology(TOPOLOGIES / "relay-bounce.yaml", overrides={"hosts.relay.stack": "dual"})
    assert topo.host_stack("relay") == "dual"


def test_every_problem_is_reported_with_file_line_and_path(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        name: bad
        segments:
          a: {family: dual}
          b: {family: ipv7}
        hosts:
          r: {kind: router, segments: [a]}
          x: {kind: mta, segment: c, software: qmail}
          y: {kind: mta, segment: a, bogus: 1}
        scenario:
          - stop: nobody
          - frobnicate: 1
        timing: {retry: soon}
        """,
    )
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    text = str(err.value)
    problems = {p.path: p for p in err.value.problems}
    # schema problems and cross-reference problems arrive together
    assert "segments.b.family" in problems
    assert "hosts.y.bogus" in problems and problems["hosts.y.bogus"].message == "unknown key"
    assert "timing.retry" in problems
    assert "scenario[1]" in problems
    assert "hosts.r.segments" in problems
    assert "hosts.x.software" in problems and "exim, postfix, sendmail" in problems["hosts.x.software"].message
    assert "hosts.x.segment" in problems
    assert "scenario[0].stop" in problems
    assert problems["segments.b.family"].line == 5
    assert problems["scenario[0].stop"].line == 11
    assert str(path) in text
    # a host left out for a schema problem is not reported again as unknown
    assert "'y'" not in text.replace("hosts.y", "")


def test_stack_wider_than_segment_is_rejected(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace("lan: {family: dual}", "lan: {family: ipv6}").replace(
        "mx: {kind: mta, segment: lan,", "mx: {kind: mta, segment: lan, stack: dual,"))
    with pytest.raises(TopologyError, match="a dual host cannot sit on the ipv6 segment"):
        load_topology(path)


def test_dns_must_be_reachable_over_a_common_family(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL.replace(
        "segments:\n  lan: {family: dual}", "segments:\n  lan: {family: ipv6}\n  v4: {family: ipv4}"
    ).replace("c: {kind: client, segment: lan}", "c: {kind: client, segment: v4}"))
    with pytest.raises(TopologyError, match="hosts.c: cannot reach the DNS server dns"):
        load_topology(path)


def test_expectation_references_are_checked(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "  - {message: m9, path: [mx, nowhere]}\n  - {mailbox: {address: x@example.net}}\n")
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    paths = {p.path for p in err.value.problems}
    assert paths == {"expect[1].message", "expect[1].path[1]", "expect[2].mailbox.address"}


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nsegments: {a: [\n")
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    assert err.value.problems[0].line is not None
    assert "not valid YAML" in str(err.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="cannot read file"):
        load_topology(tmp_path / "absent.yaml")


@pytest.mark.parametrize("value,seconds", [("10s", 10), ("500ms", 0.5), ("3m", 180), (7, 7), ("1h", 3600)])
def test_durations(tmp_path: Path, value: object, seconds: float) -> None:
    topo = load_topology(write(tmp_path, MINIMAL + f"timing: {{retry: {value}}}\n"))
    assert topo.timing.retry == seconds


# --- reading: no input crashes, hangs or exhausts memory -------------------------------


@pytest.mark.parametrize("text,message", [
    ("name: x\nhosts:\n  a: {kind: mta}\n  a: {kind: dns}\n", "key 'a' is given twice, at lines 3 and 4"),
    ("name: x\nsegments: " + "[" * 1000 + "]" * 1000 + "\n", "nest"),
    ("name: x\n" + "".join("  " * i + f"k{i}:\n" for i in range(100)), "nested more than 64 levels deep"),
    ("a: &a [*a]\n", "recursive alias"),
    ("when: 2024-13-01\n", "month must be in 1..12"),
    ("a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + chr(ord(c) - 1)] * 10)}]\n" for c in "bcdefgh"),
     "aliases expand the document to more than"),
])
def test_unreadable_yaml_is_one_clear_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(TopologyError) as err:
        load_topology(write(tmp_path, text))
    assert len(err.value.problems) == 1 and message in str(err.value)
    assert err.value.problems[0].line is not None


def test_duplicate_key_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(TopologyError) as err:
        load_topology(write(tmp_path, "name: x\nhosts:\n  a: {kind: mta, kind: dns}\n"))
    assert err.value.problems[0].path == "hosts.a.kind" and err.value.problems[0].line == 3


@pytest.mark.parametrize("kind", ["directory", "fifo", "device", "binary"])
def test_files_that_are_not_yaml_text(tmp_path: Path, kind: str) -> None:
    import os

    path = tmp_path / "t.yaml"
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = Path("/dev/zero")
    else:
        path.write_bytes(b"name: x\ntitle: \xff\xfe\n")
    with pytest.raises(TopologyError) as err:
        load_topology(path)
    [problem] = err.value.problems
    assert problem.file == str(path)
    assert {"directory": "is a directory", "fifo": "not a regular file", "device": "not a regular file",
            "binary": "not UTF-8"}[kind] in problem.message
    assert kind != "binary" or problem.line == 2
