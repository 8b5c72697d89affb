"""Settle, flush and the probe behind them, against a fake lab replaying a recorded Exim run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import BOUNCE, EXIM
from fakelab import FakeLab

from testbed.errors import HostDown
from testbed.rundir import RunDir
from testbed.scenario import ScenarioError, ScenarioRunner, StepRecord

MTAS = ["relay", "mail", "mx10", "mx20", "mx30"]


def runner(lab: FakeLab, tmp_path: Path) -> ScenarioRunner:
    return ScenarioRunner(lab, RunDir(tmp_path / "run"))


def record(index: int = 0, kind: str = "settle") -> StepRecord:
    return StepRecord(index, kind, kind, 0.0)


def test_settle_polls_until_quiet_and_snapshots_the_queues(exim_lab: FakeLab, tmp_path: Path) -> None:
    r, rec = runner(exim_lab, tmp_path), record(2)
    r.settle(None, rec)
    # Two polls: the first sees the log sizes, the second sees them unchanged.
    assert rec.detail == {"polls": 2, "queued": {"mx20": 1}}
    snapshot = json.loads((tmp_path / "run" / "queues" / "step-03.json").read_text())
    assert snapshot["relay"] == [] and [e["queue_id"] for e in snapshot["mx20"]] == [BOUNCE]
    assert snapshot["mx20"][0]["state"] == "deferred"
    # One exec per MTA and poll, each the queue listing and the log size together.
    assert len(exim_lab.commands("mx20")) == 2 and all(EXIM.queue_command() in c for c in exim_lab.commands("mx20"))


def test_settle_waits_while_a_message_is_in_flight(exim_lab: FakeLab, tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "exim" / "bookworm" / "mx-routing-broken"
    active = (data / "queue-mx20-active.txt").read_text()
    deferred = (data / "queue-mx20-deferred.txt").read_text()
    exim_lab.reply("mx20", EXIM.queue_command(), active, active, active, deferred)
    rec = record()
    runner(exim_lab, tmp_path).settle(None, rec)
    # Three busy, then two calm ones with the same log sizes (settle_quiet is 0 here).
    assert rec.detail["polls"] == 5


def test_settle_gives_up_at_its_timeout(exim_lab: FakeLab, tmp_path: Path) -> None:
    data = Path(__file__).resolve().parents[1] / "data" / "exim" / "bookworm" / "mx-routing-broken"
    exim_lab.reply("mx20", EXIM.queue_command(), (data / "queue-mx20-active.txt").read_text())
    with pytest.raises(ScenarioError, match=r"did not settle within 0 s \(in flight: \{'mx20': \['1xXZwD-0000DX-3B'\]\}"):
        runner(exim_lab, tmp_path).settle(0.01, record())


def test_settle_skips_a_stopped_host(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.stop("mx10")
    rec = record()
    r = runner(exim_lab, tmp_path)
    r._down.add("mx10")
    r.settle(None, rec)
    assert exim_lab.commands("mx10") == []
    assert rec.detail["queued"] == {"mx20": 1}


def test_a_host_that_goes_down_while_probed_reads_as_down(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.stop("mx30")  # the scenario does not know: the probe finds out
    rec = record()
    runner(exim_lab, tmp_path).settle(None, rec)
    snapshot = json.loads((tmp_path / "run" / "queues" / "step-01.json").read_text())
    assert snapshot["mx30"] is None and snapshot["relay"] == []


def test_a_queue_that_cannot_be_listed_stops_the_scenario(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.reply("relay", EXIM.queue_command(), "exim: spool directory is not writable", rc=1)
    with pytest.raises(ScenarioError, match=r"`/usr/local/sbin/tb-exim queue` failed on relay \(exit 1\): exim: spool"):
        runner(exim_lab, tmp_path).settle(None, record())


def test_a_probe_that_keeps_failing_stops_settle_after_three_tries(exim_lab: FakeLab, tmp_path: Path) -> None:
    # The probe's own shell never runs (an exec timed out): no marker in the output.
    exim_lab.exec_fails("mail", EXIM.queue_command(), 124)
    with pytest.raises(ScenarioError, match=r"cannot read the queue of mail \(exit 124: no output\)"):
        runner(exim_lab, tmp_path).settle(None, record())
    assert len(exim_lab.commands("mail")) == 3


def test_flush_retries_the_waiting_ids_and_settle_waits_for_their_log_lines(exim_lab: FakeLab, tmp_path: Path) -> None:
    r = runner(exim_lab, tmp_path)
    size_before = len(exim_lab.read_file("mx20", EXIM.mail_log))
    rec = record(4, "flush")
    r.flush(["mx20"], rec)
    assert rec.detail == {"flushed": {"mx20": [BOUNCE]}}
    assert EXIM.flush_command() in exim_lab.commands("mx20")
    assert r._flushed["mx20"] == (size_before, {BOUNCE})
    assert BOUNCE in exim_lab.read_file("mx20", EXIM.mail_log)[size_before:]  # the fake MTA logged the retry
    r.settle(None, record(5))
    assert r._flushed == {}  # acted on: a log line after the flush names the bounce
    # The log since the flush comes with the probe, in the same exec.
    assert any(EXIM.queue_command() in c and f"; tail -c +{size_before + 1} " in c for c in exim_lab.commands("mx20"))
    assert not any(c.startswith("tail -c") for c in exim_lab.commands("mx20"))


def test_a_flush_nobody_acts_on_keeps_settle_waiting(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.reply("mx20", EXIM.flush_command(), "")  # the MTA never logs the retry
    r = runner(exim_lab, tmp_path)
    r.flush(["mx20"], record())
    with pytest.raises(ScenarioError, match=r"flushes not yet acted on: \{'mx20': \['1xXZwA-0000AU-1u'\]\}"):
        r.settle(0.05, record())


def test_a_failed_flush_names_the_host_and_the_output(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.reply("mx20", EXIM.flush_command(), "exim: permission denied", rc=1)
    with pytest.raises(ScenarioError, match="flushing mx20 failed: exim: permission denied"):
        runner(exim_lab, tmp_path).flush(["mx20"], record())


def test_service_steps_run_the_adapters_commands(exim_lab: FakeLab, tmp_path: Path) -> None:
    exim_lab.reply("mx10", EXIM.stop_command(), "stopped")
    exim_lab.reply("mx10", EXIM.start_command(), "started")
    from testbed.model import StartServiceStep, StopServiceStep

    r = runner(exim_lab, tmp_path)
    stop, start = record(0, "stop_service"), record(1, "start_service")
    r._dispatch(StopServiceStep(stop_service="mx10"), stop)
    r._dispatch(StartServiceStep(start_service="mx10"), start)
    assert (stop.ok, stop.detail, start.ok, start.detail) == (True, {"output": "stopped"}, True, {"output": "started"})
    assert exim_lab.commands("mx10") == [
        "sh /etc/testbed/service stop",
        "setpriv --inh-caps=-net_admin --bounding-set=-net_admin -- "
        "sh /etc/testbed/service start && until sh /etc/testbed/ready; do sleep 0.05; done",
    ]


def test_the_fake_lab_refuses_what_nobody_recorded(exim_lab: FakeLab) -> None:
    res = exim_lab.exec("mx20", "sendmail -q")
    assert res.rc == 127 and "sendmail" in res.stderr  # never the test machine's own MTA
    exim_lab.stop("mx20")
    with pytest.raises(HostDown, match="mx20 is not running"):
        exim_lab.exec("mx20", EXIM.queue_command())


# --- the quiet window (pure: probe times and log sizes in, settled or not out) ----------


def test_quiet_window_counts_from_the_first_probe_that_saw_the_final_sizes() -> None:
    from testbed.scenario import QuietWindow

    q = QuietWindow(1.0)
    assert not q.probed(0.0, 0.2, {"mx20": 10}, calm=True)  # the sizes are read somewhere in [0.0, 0.2]
    assert not q.probed(0.5, 0.7, {"mx20": 10}, calm=True)  # unchanged, but only since 0.2
    assert not q.probed(1.1, 1.3, {"mx20": 10}, calm=True)  # 0.9 s proven quiet
    assert q.probed(1.2, 1.4, {"mx20": 10}, calm=True)  # 1.0 s between the end of the first and this start


def test_quiet_window_starts_over_when_a_log_grows_or_anything_is_in_flight() -> None:
    from testbed.scenario import QuietWindow

    q = QuietWindow(1.0)
    q.probed(0.0, 0.1, {"a": 1}, calm=True)
    assert not q.probed(2.0, 2.1, {"a": 2}, calm=True)  # grew: the new run starts at 2.1
    assert not q.probed(2.5, 2.6, {"a": 2}, calm=True)
    assert not q.probed(3.0, 3.1, {"a": 2}, calm=False)  # in flight, log unchanged: no quiet yet
    assert not q.probed(4.5, 4.6, {"a": 2}, calm=True)  # calm again: counts from 4.6
    assert q.probed(5.6, 5.7, {"a": 2}, calm=True)


def test_quiet_window_of_zero_still_needs_two_probes_with_the_same_sizes() -> None:
    from testbed.scenario import QuietWindow

    q = QuietWindow(0.0)
    assert not q.probed(0.0, 0.1, {"a": 1}, calm=True)
    assert q.probed(0.1, 0.2, {"a": 1}, calm=True)
