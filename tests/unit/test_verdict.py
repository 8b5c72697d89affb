"""Expectations against observations: each kind can pass and can fail."""

from __future__ import annotations

from recorded import mx_routing_plan

from testbed.events import MailboxMessage, QueueEntry
from testbed.track import History, Hop
from testbed.verdict import Observation, evaluate


def observation(**changes) -> Observation:
    m1 = History("m1", "<m1@c>", ("unknown_user@brainbird.nl",),
                 hops=[Hop("relay", "A", "relayed", "mx30", "198.18.3.30"),
                       Hop("mx30", "B", "relayed", "mx20", "2001:db8:2::20"),
                       Hop("mx20", "C", "bounced")],
                 dsn_generated_at=["mx20"], state="lost")
    m1.dsns = [History("m1 bounce", "<d@x>", ("user@skimbee.net",), hops=[Hop("mx20", "D", "bounced")])]
    m2 = History("m2", "<m2@c>", ("user@brainbird.nl",),
                 hops=[Hop("relay", "E", "relayed", "mx30"), Hop("mx30", "F", "relayed", "mx20"),
                       Hop("mx20", "G", "relayed", "mx10"), Hop("mx10", "H", "delivered")],
                 delivered_to=[("user@brainbird.nl", "mx10")], state="delivered")
    base = dict(
        histories={"m1": m1, "m2": m2},
        mailboxes={"user@skimbee.net": [], "user@brainbird.nl": []},
        queues={"mx20": [], "relay": [], "mx30": [], "mx10": [], "mail": []},
        dns_queries=[
            {"client": "198.18.3.25", "type": "A", "name": "mx10.brainbird.nl."},
            {"client": "2001:db8:2::20", "type": "AAAA", "name": "mx10.brainbird.nl."},
        ],
        logs={"mx20": "warning: no MX host for skimbee.net has a valid address record\n"},
        message_ids={"m1": "<m1@c>", "m2": "<m2@c>"},
    )
    base.update(changes)
    return Observation(**base)


def statuses(obs: Observation, plan=None) -> list[str]:
    return [c.status for c in evaluate(plan or mx_routing_plan(), obs)]


def test_all_hold_on_the_study_outcome() -> None:
    result = statuses(observation())
    assert result.count("pass") == 7 and result.count("n/a") == 3 and "fail" not in result


def test_per_mta_expectations_switch_with_the_software() -> None:
    plan = mx_routing_plan(software="exim")
    obs = observation()
    obs.histories["m1"].state = "bounce-queued"
    obs.queues["mx20"] = [QueueEntry("Q", "deferred", "", ("user@skimbee.net",))]
    checks = evaluate(plan, obs)
    applied = [c.description for c in checks if c.status == "pass"]
    assert any("Exim and Sendmail on mx20" in d for d in applied)
    assert all(c.status != "fail" for c in checks)
    assert any(c.status == "n/a" and "mx20 runs postfix" in c.detail for c in checks)


def test_each_expectation_can_fail() -> None:
    obs = observation()
    obs.histories["m1"].hops = obs.histories["m1"].hops[:1]
    obs.histories["m1"].dsns[0].delivered_to = [("user@skimbee.net", "mail")]
    obs.histories["m1"].state = "returned"
    obs.histories["m2"].state = "queued"
    obs.mailboxes["user@skimbee.net"] = [MailboxMessage("/x", "<d@x>", "s", "f", True, ("<m1@c>",))]
    obs.dns_queries.append({"client": "198.18.3.25", "type": "AAAA", "name": "mx20.brainbird.nl."})
    obs.queues["mx20"] = [QueueEntry("Q", "deferred", "", ("user@skimbee.net",))]
    checks = [c for c in evaluate(mx_routing_plan(), obs) if c.status != "n/a"]
    assert [c.status for c in checks] == ["fail"] * 7
    assert "expected ['relay', 'mx30', 'mx20'], got ['relay']" in checks[0].detail
    assert any("expected 0, saw 1" in c.detail for c in checks)


def test_fixed_variant_expectations() -> None:
    plan = mx_routing_plan("fixed")
    obs = observation()
    assert "fail" in statuses(obs, plan)
    m1 = obs.histories["m1"]
    m1.hops = [Hop("relay", "A", "relayed", "mx20", "198.18.1.20"), Hop("mx20", "C", "bounced")]
    m1.dsns[0].delivered_to = [("user@skimbee.net", "mail")]
    m1.state = "returned"
    obs.histories["m2"].hops = [Hop("relay", "E", "relayed"), Hop("mx20", "G", "relayed"), Hop("mx10", "H", "delivered")]
    obs.mailboxes["user@skimbee.net"] = [MailboxMessage("/x", "<d@x>", "s", "f", True, ("<m1@c>",))]
    assert statuses(obs, plan) == ["pass"] * 5


def test_unreadable_queue_and_mailbox_fail_loudly() -> None:
    obs = observation(queues={"mx20": None}, mailboxes={})
    details = [c.detail for c in evaluate(mx_routing_plan(), obs) if c.status == "fail"]
    assert any("could not be read" in d for d in details)
    assert any("host down" in d for d in details)


def test_when_clause_marks_other_software_not_applicable() -> None:
    plan = mx_routing_plan()
    exp = plan.topology.expect[0].model_copy(update={"when": {"mx20": ["exim"]}})
    topo = plan.topology.model_copy(update={"expect": [exp]})
    from dataclasses import replace

    [check] = evaluate(replace(plan, topology=topo), observation())
    assert check.status == "n/a" and "mx20 runs exim" in check.detail
