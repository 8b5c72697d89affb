"""A scenario step that cannot be carried out ends the run as a lab error, never an internal error."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from testbed.plan import LABEL_RUN

REPO = Path(__file__).resolve().parents[2]
SEND_REFUSED = Path(__file__).resolve().parent / "data" / "send-refused.yaml"


def test_a_refused_send_stops_the_run_with_a_lab_error(docker_client, tmp_path) -> None:
    junit = tmp_path.with_name(tmp_path.name + "-junit.xml")
    res = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "run", str(SEND_REFUSED), "--runs", str(tmp_path), "--junit", str(junit)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    output = res.stdout + res.stderr
    assert res.returncode == 3, output
    assert "Traceback" not in output and "internal error" not in output
    flat = " ".join(output.split())  # the terminal wraps long lines
    # The step, the host it ran on, the server and the server's own reply:
    assert "step 1 of 2 (send m1: user@skimbee.net -> unknown_user@brainbird.nl via mx10) failed" in flat
    assert "mx10 did not accept m1 from client" in flat
    assert "550 5.1.1 <unknown_user@brainbird.nl>" in flat

    [run_dir] = tmp_path.iterdir()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["passed"] is False and "mx10 did not accept m1" in result["error"]
    assert [(s["kind"], s["ok"]) for s in result["steps"]] == [("send", False)]  # settle never ran
    assert result["expectations"] == []  # nothing judged
    assert "550 5.1.1" in (run_dir / "sends" / "m1.txt").read_text()
    assert "reject: RCPT" in (run_dir / "logs" / "mx10" / "mail.log").read_text()
    # The JUnit XML says the same: one error test case, the step's failure in its text.
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert case.get("name") == "lab" and "mx10 did not accept m1" in case.find("error").text
    run_id = result["run_id"]
    assert not docker_client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={run_id}"})
    assert not docker_client.api.networks(filters={"label": f"{LABEL_RUN}={run_id}"})
