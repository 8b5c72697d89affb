"""Every exercise end to end, as a class would use it: up, check fails with the documented hints,
the teacher's solution applied through the student-facing commands, check passes.

relay-bounce-home runs as a classroom of three labs at once: the solution goes
into one of them, and the class's check tells that lab from the others.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from helpers import TESTBED, labs_up, run_testbed

from testbed.exercise import load_exercise

EXERCISES = Path(__file__).resolve().parents[2] / "exercises"
def apply_solution(exercise: str, handle: str, cwd: Path) -> None:
    """The teacher's solution/apply.sh, which only uses `testbed exec` (as a student would)."""
    env = {**os.environ, "TESTBED": " ".join(TESTBED)}
    proc = subprocess.run(["sh", str(EXERCISES / exercise / "solution" / "apply.sh"), handle], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def check(handles: list[str], cwd: Path) -> tuple[int, dict[str, dict]]:
    proc = run_testbed("check", *handles, "--json", cwd=cwd)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, {lab["lab"]: lab for lab in json.loads(proc.stdout)}


def hints(exercise: str) -> dict[str, str]:
    return {c.name: c.hint for c in load_exercise(EXERCISES / exercise).spec.checks}


def test_every_exercise_has_a_brief_checks_with_hints_and_a_solution() -> None:
    found = sorted(p.parent.name for p in EXERCISES.glob("*/exercise.yaml"))
    assert len(found) >= 2
    for name in found:
        exercise = load_exercise(EXERCISES / name)
        assert exercise.brief_path.read_text().startswith("# ")
        assert all(c.hint and c.pass_ and c.fail for c in exercise.spec.checks)
        assert (EXERCISES / name / "solution" / "apply.sh").is_file()


def test_a_classroom_of_three_relay_bounce_labs(docker_client, tmp_path) -> None:
    with labs_up(docker_client, tmp_path, "relay-bounce-home", "--count", "3", "--ttl", "2h") as labs:
        handles = [lab["handle"] for lab in labs]
        assert len(set(handles)) == 3 and all(h.startswith("relay-bounce-home-") for h in handles)
        subnets = [set(s for seg in lab["segments"].values() for s in seg["subnets"]) for lab in labs]
        assert not (subnets[0] & subnets[1] or subnets[0] & subnets[2] or subnets[1] & subnets[2])

        rc, before = check(handles, tmp_path)
        assert rc == 1
        expected_hints = hints("relay-bounce-home")
        for handle in handles:
            failed = {c["name"]: c for c in before[handle]["checks"] if not c["passed"]}
            assert "bounce-reaches-sender" in failed
            assert failed["bounce-reaches-sender"]["hint"] == expected_hints["bounce-reaches-sender"]

        apply_solution("relay-bounce-home", handles[1], tmp_path)
        rc, after = check(handles, tmp_path)
        assert rc == 1  # two students have not solved it yet
        assert after[handles[1]]["passed"], after[handles[1]]
        assert not after[handles[0]]["passed"] and not after[handles[2]]["passed"]
        alone = run_testbed("check", handles[1], cwd=tmp_path)
        assert alone.returncode == 0 and "3/3 checks pass" in alone.stdout


@pytest.mark.parametrize("exercise", ["mx-routing-home", "relay-bounce-home-exim", "client-fallback"])
def test_the_exercise_is_solvable_with_the_student_commands(exercise: str, docker_client, tmp_path) -> None:
    with labs_up(docker_client, tmp_path, exercise, "--ttl", "2h") as labs:
        handle = labs[0]["handle"]
        rc, before = check([handle], tmp_path)
        failed = [c for c in before[handle]["checks"] if not c["passed"]]
        assert rc == 1 and failed
        assert all(c["hint"] == hints(exercise)[c["name"]] for c in failed)
        apply_solution(exercise, handle, tmp_path)
        rc, after = check([handle], tmp_path)
        assert rc == 0, json.dumps(after, indent=2)
