"""Unit-test fixtures: a fake lab replaying a recorded Exim run of mx-routing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakelab import FakeLab, split_before
from recorded import mx_routing_plan, recorded_dir, recorded_logs

from testbed.adapters import mta_adapter
from testbed.plan import LabPlan

EXIM = mta_adapter("exim")
#: The recorded run (tests/data/exim/bookworm/mx-routing-broken) had this run id.
RUN_ID = "238e79f1"
#: The bounce mx20 made and keeps queued.
BOUNCE = "1xXZwA-0000AU-1u"


def exim_plan() -> LabPlan:
    return mx_routing_plan(software="exim", run_id=RUN_ID, **{"timing.settle_quiet": 0, "timing.settle_poll": 0,
                                                                 "timing.settle_timeout": 5})


@pytest.fixture
def exim_lab(tmp_path: Path) -> FakeLab:
    """The recorded Exim lab: every MTA log as recorded, mx20's up to its bounce
    (the rest is logged when mx20's queue is flushed), mx20 holding the bounce."""
    data = recorded_dir("exim", "bookworm", "mx-routing-broken")
    logs = recorded_logs("exim", "bookworm", "mx-routing-broken")
    lab = FakeLab(exim_plan(), tmp_path / "lab")
    before, after = split_before(logs["mx20"], BOUNCE)
    for host in ("relay", "mail", "mx10", "mx30"):
        lab.put(host, EXIM.mail_log, logs[host])
        lab.reply(host, EXIM.queue_command(), "")
    lab.put("mx20", EXIM.mail_log, before)
    lab.reply("mx20", EXIM.queue_command(), (data / "queue-mx20-deferred.txt").read_text())
    lab.reply("mx20", EXIM.flush_command(), lambda: lab.append("mx20", EXIM.mail_log, after) or "")
    return lab
