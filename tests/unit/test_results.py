"""What a run concluded, as the benchmark compares it between fast and slow timing (pure)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from testbed.results import outcome_signature, signature_differences

DATA = Path(__file__).resolve().parents[1] / "data"


def result_json() -> dict:
    """A result.json as the runner writes it (mx-routing broken, Postfix), trimmed to what matters."""
    hop = {"host": "relay", "queue_id": "63650BA52F", "outcome": "relayed", "next_host": "mx30",
           "address": "198.18.7.30", "family": "ipv4", "reason": "250 2.0.0 Ok: queued as E15B6BA543",
           "evidence": ["relay: Dec 02 01:15:52 relay postfix/smtp[57]: connect to mx10 ...: Connection timed out"]}
    return {
        "run_id": "e425f662", "passed": True, "error": None, "timings_s": {"bring_up": 16.9},
        "messages": {
            "m1": {"name": "m1", "message_id": "<m1.e425f662@client.skimbee.net>", "recipients": ["u@b"],
                   "state": "lost", "path": ["relay", "mx30"], "delivered_to": [], "dsn_generated_at": ["mx30"],
                   "hops": [hop], "dsns": [{"name": "m1 bounce", "state": "lost", "path": ["mx30"], "hops": []}]},
        },
        "expectations": [{"index": 0, "kind": "message", "description": "the path", "status": "pass",
                          "detail": "path: ['relay', 'mx30']"}],
    }


def test_runs_that_behaved_the_same_have_the_same_signature() -> None:
    a, b = result_json(), result_json()
    hop = b["messages"]["m1"]["hops"][0]
    # Another run: other ids, subnets, times and log lines.
    b.update(run_id="0badcafe", timings_s={"bring_up": 5.0})
    hop.update(queue_id="11111AAAAA", address="198.18.9.30", reason="250 2.0.0 Ok: queued as 2222BBBB",
               evidence=["relay: Dec 03 ..."])
    b["messages"]["m1"]["message_id"] = "<m1.0badcafe@client.skimbee.net>"
    b["expectations"][0]["detail"] = "path: ['relay', 'mx30'] (other words)"
    assert outcome_signature(a) == outcome_signature(b)
    assert signature_differences(outcome_signature(a), outcome_signature(b)) == []
    # And the signature survives a JSON round trip (the benchmark may store it).
    assert json.loads(json.dumps(outcome_signature(a))) == outcome_signature(a)


def test_a_changed_outcome_is_named() -> None:
    a = result_json()
    b = copy.deepcopy(a)
    b["messages"]["m1"]["hops"][0]["next_host"] = "mx20"
    b["messages"]["m1"]["dsns"][0]["state"] = "delivered"
    b["expectations"][0]["status"] = "fail"
    assert signature_differences(outcome_signature(a), outcome_signature(b)) == [
        "expectations[0].status: 'pass' -> 'fail'",
        "messages.m1.dsns[0].state: 'lost' -> 'delivered'",
        "messages.m1.hops[0].next_host: 'mx30' -> 'mx20'",
    ]


def test_the_family_of_a_handover_is_not_compared() -> None:
    # Postfix picks a dual-stack next hop's family at random (smtp_address_preference = any).
    a = result_json()
    b = copy.deepcopy(a)
    b["messages"]["m1"]["hops"][0]["family"] = "ipv6"
    assert signature_differences(outcome_signature(a), outcome_signature(b)) == []


def test_a_missing_message_or_an_error_is_a_difference() -> None:
    a = result_json()
    b = copy.deepcopy(a)
    del b["messages"]["m1"]
    b["error"] = "step 4 of 7 (settle) failed"
    diffs = signature_differences(outcome_signature(a), outcome_signature(b))
    assert diffs[0] == "error: False -> True"
    assert diffs[1].startswith("messages.m1: {'state': 'lost'") and diffs[1].endswith("-> None")
