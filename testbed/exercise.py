"""Exercise files: a topology that starts broken, a brief, and checks with pass, fail and hint (pure).

An exercise lives in a directory (``exercises/<name>/``) with ``exercise.yaml``,
the student's ``brief.md`` and, kept apart for the teacher, ``solution/``.
``exercise.yaml`` names the topology and variant the lab starts from and the
checks `testbed check` judges a live lab by. A check is, in the topology's own
vocabulary, the steps to run in the lab first (send a fresh message, settle,
flush...) and the expectations to hold afterwards; or a probe (connect from
one host to another over a family; look a name up from a host). Each check
says what the student reads when it passes, when it fails, and a hint.

Every problem in a file is reported at once, at its line, like a topology's;
a check that names a host or message that does not exist is one of them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, model_validator

from .errors import Problem, TopologyError
from .model import Expect, Step, Topology, load_topology
from .model.checks import check_references
from .model.load import _clean_loc, _schema_message
from .model.schema import Name, Strict
from .source import SourceDoc, load_yaml

Family = Literal["ipv4", "ipv6"]
#: A check's name, as `--only` and grading scripts use it.
CheckName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,39}$")]


class ConnectProbe(Strict):
    """A TCP connection from one lab host to another's address of one family."""

    from_: Name = Field(alias="from")
    to: Name
    family: Family
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    #: False: the check passes when the connection is NOT made (a port that must stay closed).
    succeeds: bool = True


class LookupProbe(Strict):
    """A DNS lookup from a lab host, through its own resolver configuration (the lab DNS server)."""

    from_: Name = Field(alias="from")
    name: str
    type: Literal["A", "AAAA", "MX", "PTR", "TXT"] = "A"
    #: Each of these must be among the answers (empty: at least one answer).
    answers: list[str] = Field(default_factory=list)
    #: True: the name must have no answer of this type.
    empty: bool = False


class Probe(Strict):
    connect: ConnectProbe | None = None
    lookup: LookupProbe | None = None

    @model_validator(mode="after")
    def _one(self) -> Probe:
        if (self.connect is None) == (self.lookup is None):
            raise ValueError("a probe is one of: connect, lookup")
        return self


class CheckSpec(Strict):
    name: CheckName
    #: Run in the live lab before the expectations are judged (the scenario's step vocabulary).
    steps: list[Step] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)
    probe: Probe | None = None
    pass_: str = Field(alias="pass")
    fail: str
    hint: str

    @model_validator(mode="after")
    def _something_to_check(self) -> CheckSpec:
        if not self.expect and self.probe is None:
            raise ValueError("a check needs expect (with steps to run first, if any) or a probe")
        return self


class ExerciseFile(Strict):
    title: str
    #: The topology file, relative to exercise.yaml.
    topology: str
    variant: str | None = None
    #: Topology values set for this exercise, as `--set` does (``hosts.mx20.software: exim``).
    set: dict[str, Any] = Field(default_factory=dict)
    brief: str = "brief.md"
    #: The hosts the student may change (the brief says so too).
    may_change: list[Name] = Field(default_factory=list)
    checks: Annotated[list[CheckSpec], Field(min_length=1)]


class Exercise:
    """A loaded exercise: its file, the topology it starts from, its checks."""

    def __init__(self, path: Path, spec: ExerciseFile, topology: Topology):
        self.path, self.spec, self.topology = path, spec, topology

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def topology_path(self) -> Path:
        return (self.directory / self.spec.topology).resolve()

    @property
    def brief_path(self) -> Path:
        return self.directory / self.spec.brief

    def check_topology(self, check: CheckSpec) -> Topology:
        """The lab's topology with this check's steps as its scenario and its expectations as its own."""
        return self.topology.model_copy(update={"scenario": list(check.steps), "expect": list(check.expect)})


def exercise_file(path: Path) -> Path:
    """An exercise directory or its exercise.yaml -> the file."""
    return path / "exercise.yaml" if path.is_dir() else path


def load_exercise(path: Path, overrides: dict[str, Any] | None = None, topology: Topology | None = None) -> Exercise:
    """Read and check an exercise; every problem at once (TopologyError), each at its line.

    ``topology``: the live lab's own (read back from its plan), instead of loading the file again.
    ``overrides``: more ``--set`` values, after the exercise's own.
    """
    path = exercise_file(Path(path))
    doc = load_yaml(path)
    try:
        spec = ExerciseFile.model_validate(doc.data)
    except ValidationError as exc:
        raise TopologyError([doc.problem(_clean_loc(tuple(e["loc"])), _schema_message(e)) for e in exc.errors()],
                            "exercise") \
            from None
    topo_path = (path.parent / spec.topology)
    if not topo_path.is_file():
        raise TopologyError([doc.problem(("topology",), f"no topology file {topo_path}")], "exercise")
    if topology is None:
        topology = load_topology(topo_path, spec.variant, {**spec.set, **(overrides or {})})
    exercise = Exercise(path, spec, topology)
    problems = [p for i, check in enumerate(spec.checks) for p in _check_problems(doc, exercise, i, check)]
    if not exercise.brief_path.is_file():
        problems.append(doc.problem(("brief",), f"no brief {exercise.brief_path}"))
    for i, host in enumerate(spec.may_change):
        if host not in topology.hosts:
            problems.append(doc.problem(("may_change", i), f"the topology has no host {host!r}"))
    if problems:
        raise TopologyError(problems, "exercise")
    return exercise


def _check_problems(doc: SourceDoc, exercise: Exercise, index: int, check: CheckSpec) -> list[Problem]:
    """References in one check (hosts, message ids), found by the topology's own reference checks."""
    where = ("checks", index)
    topo = exercise.check_topology(check)
    renamed = {"scenario": "steps", "expect": "expect"}
    problems = []
    for loc, message in check_references(topo):
        if loc and loc[0] in renamed:
            problems.append(doc.problem(where + (renamed[loc[0]],) + tuple(loc[1:]), message))
    if check.probe is not None:
        probe = check.probe.connect or check.probe.lookup
        kind = "connect" if check.probe.connect else "lookup"
        hosts = [("from", probe.from_)] + ([("to", check.probe.connect.to)] if check.probe.connect else [])
        for key, host in hosts:
            if host not in exercise.topology.hosts:
                problems.append(doc.problem(where + ("probe", kind, key), f"the topology has no host {host!r}"))
    return problems

