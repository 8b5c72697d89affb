"""Finding a live lab again (pure parts): plan.json round trip, handles, time to live, names, CLI input."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from recorded import TOPOLOGIES

from testbed.cli import main
from testbed.errors import NoSuchLab
from testbed.fabric import RunObjects
from testbed.livelab import is_expired, parse_ttl, remaining, resolve
from testbed.model import load_topology, variant_names
from testbed.plan import LABEL_EXPIRES, LABEL_HANDLE, EngineCaps, next_handle, plan_lab
from testbed.planstore import PlanFileError, plan_from_dict, plan_to_dict, read_plan
from testbed.source import load_yaml


def every_plan():
    for path in sorted(TOPOLOGIES.glob("*.yaml")):
        for variant in variant_names(load_yaml(path).data):
            yield plan_lab(load_topology(path, variant), "r1", EngineCaps((1, 51)))


@pytest.mark.parametrize("plan", list(every_plan()), ids=lambda p: f"{p.name}/{p.variant}")
def test_plan_json_reads_back_into_the_same_plan(plan) -> None:
    back = plan_from_dict(json.loads(json.dumps(plan_to_dict(plan))))
    for f in dataclasses.fields(plan):
        if f.name != "topology":
            assert getattr(back, f.name) == getattr(plan, f.name), f.name
    # The topology as run: everything but the variants that did not run.
    assert back.topology.model_dump(exclude={"variants"}) == plan.topology.model_dump(exclude={"variants"})
    assert back.messages() == plan.messages() and back.scenario == plan.scenario


def test_a_missing_or_broken_plan_json_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(PlanFileError, match="is gone"):
        read_plan(tmp_path / "plan.json")
    (tmp_path / "plan.json").write_text('{"run_id": "x"}')
    with pytest.raises(PlanFileError, match="not a plan this testbed can read"):
        read_plan(tmp_path / "plan.json")


def test_handles_take_the_smallest_free_number() -> None:
    assert next_handle("mx-routing", []) == "mx-routing-1"
    assert next_handle("mx-routing", ["mx-routing-1", "mx-routing-3", "relay-bounce-2", ""]) == "mx-routing-2"


@pytest.mark.parametrize(("text", "seconds"), [("90m", 5400), ("2h", 7200), (" 3d ", 259200), ("45s", 45)])
def test_a_time_to_live(text: str, seconds: float) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0h", "2", "2w", "-1h", "8d", "h"])
def test_a_bad_time_to_live_says_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="time to live"):
        parse_ttl(text)


def test_expiry_as_ps_shows_it() -> None:
    labels = {LABEL_EXPIRES: "1000"}
    assert remaining(labels, now=1000 - 4500) == "1 h 15 min" and not is_expired(labels, now=999)
    assert remaining(labels, now=1000) == "expired" and is_expired(labels, now=1000)
    assert remaining({}, now=0) == "-" and not is_expired({}, now=10**12)
    assert remaining({LABEL_EXPIRES: "not a time"}, now=0) == "-"


RUNS = {"3e61604f": RunObjects({LABEL_HANDLE: "mx-routing-1"}), "27886d47": RunObjects({})}


def test_a_lab_is_found_by_handle_or_run_id() -> None:
    assert resolve(RUNS, "mx-routing-1").run_id == "3e61604f"
    assert resolve(RUNS, "27886d47").handle == ""


def test_an_unknown_lab_names_the_running_ones_and_the_closest() -> None:
    with pytest.raises(NoSuchLab, match=r"did you mean 'mx-routing-1'.*running: 27886d47, mx-routing-1"):
        resolve(RUNS, "mx-routing-2")
    with pytest.raises(NoSuchLab, match="no testbed lab is running"):
        resolve({}, "mx-routing-1")


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize(("args", "message"), [
    (["up", "mx-routing", "--ttl", "forever"], "is not a time to live"),
    (["up", "mx-routing", "--count", "0"], "--count"),
    (["up", "mx-routing", "--variant", "brokne"], "did you mean 'broken'"),
    (["exec", "mx-routing-1", "relay"], "Missing argument 'COMMAND...'"),
    (["down"], "give a LAB"),
    (["logs", "mx-routing-1"], "Missing argument 'HOST'"),
])
def test_bad_input_to_the_live_lab_commands_is_a_usage_error(args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_an_ad_hoc_message_goes_through_the_senders_relay_unless_told() -> None:
    from recorded import mx_routing_plan

    from testbed.livesend import send_step

    plan = mx_routing_plan()
    step = send_step(plan, "user@skimbee.net", ["user@brainbird.nl"], None, None, None)
    assert step.send.via == "relay" and step.send.id.startswith("send-")
    assert send_step(plan, "user@brainbird.nl", ["user@skimbee.net"], None, "client", "hi").send.via == "mx10"
    import click

    with pytest.raises(click.BadParameter, match="did you mean 'mx20'"):
        send_step(plan, "user@skimbee.net", ["user@brainbird.nl"], "mx2O", None, None)
    with pytest.raises(click.BadParameter, match="address"):
        send_step(plan, "nobody", ["user@brainbird.nl"], None, None, None)
