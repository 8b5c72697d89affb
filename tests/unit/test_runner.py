"""One lab from bring-up to verdict and teardown, on a fake lab replaying a recorded Exim run."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import BOUNCE, EXIM
from fakelab import FakeLab

from testbed.runner import RunOptions, run_one

SWAKS = "=== Connected to relay.skimbee.net.\n -> DATA\n<-  354 End data with <CR><LF>.<CR><LF>\n" \
        "<-  250 OK id=1xXZw4-00003X-1a\n -> QUIT\n<-  221 relay.skimbee.net closing connection\n"


def test_a_recorded_run_replayed_gives_the_recorded_verdict(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.answer("client", "swaks ", SWAKS)
    exim_lab.answer("client", "python3 -c", "")  # both mailboxes empty
    result = run_one(exim_lab, RunOptions(runs_root=tmp_path / "runs"))
    assert result.error is None
    # The capture sidecar starts while the hosts come up (in another thread: either may log first).
    assert sorted(exim_lab.events[1:3]) == ["capture", "up"]
    assert [e for e in exim_lab.events if e != "capture"] == ["networks", "up", "stop mx10", "start mx10", "teardown"]
    assert [s["kind"] for s in result.steps] == ["stop", "send", "send", "settle", "start", "flush", "settle"]
    assert result.steps[1]["detail"]["reply"] == "250 OK id=1xXZw4-00003X-1a"
    assert result.steps[5]["detail"] == {"flushed": {"mx20": [BOUNCE]}}
    assert result.histories["m1"].state == "bounce-queued"
    assert result.histories["m2"].state == "delivered"
    assert [(c.status, c.description.split(" ")[0]) for c in result.checks if c.status != "pass"] == [
        ("n/a", "Postfix"), ("n/a", "nothing"), ("n/a", "Sendmail")]  # they apply to other MTAs
    assert sum(c.status == "pass" for c in result.checks) == 7
    assert result.passed
    saved = json.loads((result.run_dir.path / "result.json").read_text())
    assert saved["passed"] is True and saved["software"]["mx20"] == "exim"
    assert (result.run_dir.path / "logs" / "mx20" / "mail.log").read_text().count(BOUNCE) == 4
    assert (result.run_dir.path / "config" / "mx20" / "etc" / "exim4" / "exim4.conf").exists()
    assert EXIM.flush_command() in exim_lab.commands("mx20")
    page = (result.run_dir.path / "report.html").read_text()  # written after result.json, from the directory
    assert "as expected (7/7 expectations hold)" in page and "<svg" in page and "mx-routing/broken" in page


def test_a_failing_step_is_the_results_error_and_the_lab_still_goes(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.answer("client", "swaks ", SWAKS)
    exim_lab.reply("mx20", EXIM.flush_command(), "exim: spool is read-only", rc=1)
    result = run_one(exim_lab, RunOptions(runs_root=tmp_path / "runs"))
    assert result.error == "step 6 of 7 (flush mx20) failed: flushing mx20 failed: exim: spool is read-only"
    # The evidence up to the failed step is kept, but nothing is judged and the lab did not pass.
    assert not result.passed and result.checks == []
    assert result.histories["m1"].state == "lost"  # its bounce was never logged
    assert exim_lab.events[-1] == "teardown"
    steps = [(s["kind"], s["ok"]) for s in result.steps]
    assert steps == [("stop", True), ("send", True), ("send", True), ("settle", True), ("start", True), ("flush", False)]
    assert json.loads((result.run_dir.path / "result.json").read_text())["error"] == result.error
    assert "lab error, not judged" in (result.run_dir.path / "report.html").read_text()


def test_a_report_that_fails_to_render_does_not_fail_the_run(exim_lab: FakeLab, tmp_path: Path,
                                                            monkeypatch) -> None:
    from testbed import htmlreport

    def broken(_path: Path, *_args: object) -> None:
        raise RuntimeError("template exploded")

    monkeypatch.setattr(htmlreport, "write_report", broken)
    said: list[str] = []
    exim_lab.progress = said.append  # type: ignore[method-assign]
    exim_lab.answer("client", "swaks ", SWAKS)
    exim_lab.answer("client", "python3 -c", "")
    result = run_one(exim_lab, RunOptions(runs_root=tmp_path / "runs"))
    assert result.passed and (result.run_dir.path / "result.json").is_file()
    assert "could not write report.html: RuntimeError: template exploded" in said


def test_a_kept_lab_is_not_torn_down(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.answer("client", "swaks ", SWAKS)
    exim_lab.answer("client", "python3 -c", "")
    result = run_one(exim_lab, RunOptions(runs_root=tmp_path / "runs", keep=True))
    assert result.kept and "teardown" not in exim_lab.events
