"""tb-trace's output parsed: lookups and connection attempts, on runs recorded in real labs.

tests/data/clients/trace/README.md says how each file was recorded. No
assertion here bounds a measured time: the order and the identity of events
are what the parser must get right.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.clienttrace import ClientTrace, parse_trace

DATA = Path(__file__).resolve().parents[1] / "data" / "clients"
#: The client's addresses in the two labs the files were recorded in.
CLIENT = {
    "bookworm": {"198.18.4.100", "2001:db8:4::100"},
    "trixie": {"198.18.1.100", "2001:db8:1::100"},
}


def load(name: str, kind: str = "trace") -> ClientTrace:
    return parse_trace((DATA / kind / f"{name}.json").read_text(), CLIENT[name.split("-", 1)[0]])


def results(trace: ClientTrace) -> list[tuple[str, str]]:
    return [(a.family, a.result) for a in trace.attempts]


@pytest.mark.parametrize("name", ["trixie-swaks-refused-ipv6", "trixie-msmtp-refused-ipv6",
                                  "bookworm-msmtp-refused-ipv6", "bookworm-curl-refused-ipv6"])
def test_refused_first_address_then_the_second_connects(name: str) -> None:
    trace = load(name)
    assert trace.rc == 0
    assert [lk.name for lk in trace.lookups] == ["mx30.brainbird.nl"]
    lookup = trace.lookups[0]
    assert lookup.resolver == "getaddrinfo" and not lookup.override and lookup.error is None
    assert [a.split(":")[0] if ":" in a else "v4" for a in lookup.addresses] == ["2001", "v4"]  # AAAA first
    assert results(trace) == [("ipv6", "refused"), ("ipv4", "connected")]
    refused, connected = trace.attempts
    assert refused.address == lookup.addresses[0] and connected.address == lookup.addresses[1]
    assert refused.port == connected.port == 25 and refused.source_port != connected.source_port
    assert refused.started <= refused.ended <= connected.started <= connected.ended
    assert trace.connected == connected
    assert trace.started <= lookup.started <= refused.started and connected.ended <= trace.ended


def test_bookworm_swaks_stops_at_the_refused_first_address() -> None:
    trace = load("bookworm-swaks-refused-ipv6")
    assert trace.rc == 2 and "Connection refused" in trace.stderr
    assert len(trace.lookups[0].addresses) == 2
    assert results(trace) == [("ipv6", "refused")]
    assert trace.connected is None


@pytest.mark.parametrize("name", ["trixie-swaks-blackhole-ipv6", "trixie-msmtp-blackhole-ipv6",
                                  "bookworm-msmtp-blackhole-ipv6"])
def test_black_holed_ipv6_times_out_then_ipv4_connects(name: str) -> None:
    trace = load(name)
    assert results(trace) == [("ipv6", "timeout"), ("ipv4", "connected")]
    lost, ok = trace.attempts
    assert lost.syns == 3  # the first SYN and the kernel's retransmissions within the client's timeout
    # The client moved on: the timed-out attempt ends where the next one starts.
    assert lost.ended == ok.started
    assert trace.connected == ok


def test_bookworm_swaks_times_out_on_the_black_hole_and_gives_up() -> None:
    trace = load("bookworm-swaks-blackhole-ipv6")
    assert trace.rc == 2
    assert results(trace) == [("ipv6", "timeout")]
    assert trace.attempts[0].ended == trace.ended  # nothing came after it: the process's end


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_curl_starts_ipv4_while_ipv6_is_unanswered(suite: str) -> None:
    trace = load(f"{suite}-curl-blackhole-ipv6")
    assert results(trace) == [("ipv6", "timeout"), ("ipv4", "connected")]
    v6, v4 = trace.attempts
    assert v6.syns == 1  # no retransmission: curl's Happy Eyeballs delay is shorter than the SYN timer
    assert v6.ended == v4.started
    assert trace.connected == v4


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_curl_happy_eyeballs_keeps_both_families_in_flight(suite: str) -> None:
    trace = load(f"{suite}-curl-both-blackholed")
    assert trace.rc == 28 and trace.connected is None
    assert results(trace) == [("ipv6", "timeout"), ("ipv4", "timeout")]
    v6, v4 = trace.attempts
    # IPv4 starts while IPv6 is still being retried; both run until curl's --connect-timeout.
    assert v6.started < v4.started < v6.ended
    assert v6.syns > 1 and v4.syns > 1
    assert v6.ended == v4.ended == trace.ended


@pytest.mark.parametrize("suite", ["bookworm", "trixie"])
def test_icmp_unreachable_and_the_kernels_retry_are_one_attempt(suite: str) -> None:
    trace = load(f"{suite}-swaks-unreachable-ipv6")
    assert trace.rc == 2 and "unreachable" in trace.stdout + trace.stderr
    assert results(trace) == [("ipv6", "unreachable")]
    attempt = trace.attempts[0]
    assert attempt.syns == 2  # Linux re-sent the same SYN once after the first ICMPv6 error
    assert attempt.address == trace.lookups[0].addresses[0]


def test_a_resolver_models_answer_is_the_clients_lookup() -> None:
    trace = load("bookworm-swaks-model-resolver-stub")
    assert trace.resolver is not None and trace.resolver["model"] == "stub-ipv4-first"
    (lookup,) = trace.lookups  # swaks' passive getaddrinfo(NULL, "0") is not a lookup
    assert lookup.override and lookup.resolver == "model:stub-ipv4-first"
    assert lookup.addresses == trace.resolver["addresses"]
    assert results(trace) == [("ipv4", "connected")]
    assert trace.attempts[0].address == trace.resolver["addresses"][0]


def test_flows_of_other_ports_and_clients_without_answers() -> None:
    trace = load("bookworm-submit-port-refused", "swaks")  # port 26 was not captured
    assert trace.attempts == [] and trace.connected is None


def test_to_dict_is_json() -> None:
    trace = load("trixie-swaks-refused-ipv6")
    data = json.loads(json.dumps(trace.to_dict()))
    assert [a["result"] for a in data["attempts"]] == ["refused", "connected"]
    assert data["connected"]["family"] == "ipv4"
    assert data["lookups"][0]["name"] == "mx30.brainbird.nl"
    assert data["total_ms"] == round(trace.total_ms, 3)


def test_client_addresses_decide_the_direction_without_the_interface_column() -> None:
    raw = json.loads((DATA / "trace" / "trixie-swaks-refused-ipv6.json").read_text())
    # tcpdump on one interface prints no "eth0 Out": the client's addresses still tell.
    raw["packets"] = [" ".join(p.split()[:1] + p.split()[3:]) for p in raw["packets"]]
    trace = parse_trace(json.dumps(raw), CLIENT["trixie"])
    assert results(trace) == [("ipv6", "refused"), ("ipv4", "connected")]


def _recorded() -> dict:
    return json.loads((DATA / "trace" / "trixie-swaks-refused-ipv6.json").read_text())


@pytest.mark.parametrize(("mangle", "message"), [
    (lambda d: "", "printed nothing"),
    (lambda d: "{not json", "not JSON"),
    (lambda d: "[]", "not a JSON object"),
    (lambda d: {k: v for k, v in d.items() if k != "packets"}, "no 'packets'"),
    (lambda d: {**d, "rc": "0"}, "'rc' has the wrong type"),
    (lambda d: {**d, "version": 2}, "version 2"),
    (lambda d: {**d, "lookups": [1]}, r"lookups\[0\] is not a JSON object"),
    (lambda d: {**d, "lookups": [{"t": 1.0, "dur_ms": 1.0}]}, r"lookups\[0\]: 'addresses' is missing"),
    (lambda d: {**d, "lookups": [{"unparsed": "{\"t\": 1"}]}, "not JSON"),
    (lambda d: {**d, "packets": [{"t": 1}]}, "not a tcpdump line"),
    (lambda d: {**d, "resolver": []}, "'resolver' is not an object"),
])
def test_malformed_input_is_one_value_error(mangle, message: str) -> None:
    value = mangle(_recorded())
    text = value if isinstance(value, str) else json.dumps(value)
    with pytest.raises(ValueError, match=message):
        parse_trace(text, CLIENT["trixie"])
