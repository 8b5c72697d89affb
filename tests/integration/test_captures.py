"""The captures of real labs, read by Wireshark's tshark (not by the testbed's own reader).

For every handover the report claims (a hop relayed to an address, so over a
family), the segment captures hold an SMTP session to that address on port 25
whose message carries the message's Message-ID, over that family. And nothing
but the lab's own addresses is in any capture.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed.track import History


def tshark(capture: Path, display_filter: str, *fields: str) -> list[list[str]]:
    if shutil.which("tshark") is None:
        pytest.fail("these tests read captures with tshark: apt-get install tshark (make test installs it as root)",
                    pytrace=False)
    cmd = ["tshark", "-r", str(capture), "-Y", display_filter, "-T", "fields", "-E", "separator=|"]
    for field in fields:
        cmd += ["-e", field]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return [line.split("|") for line in proc.stdout.splitlines()]


def smtp_messages(run_dir: Path) -> list[tuple[str, str, str, str]]:
    """(segment, family, server address, Message-ID) of every message sent over SMTP in the lab's captures."""
    out = []
    for capture in sorted((run_dir / "captures").glob("*.pcap")):
        for ip_dst, ipv6_dst, port, message_id in tshark(capture, "imf", "ip.dst", "ipv6.dst", "tcp.dstport",
                                                         "imf.message_id"):
            if port == "25":
                family, server = ("ipv6", ipv6_dst) if ipv6_dst else ("ipv4", ip_dst)
                # A bounce also holds the returned message's Message-ID: its own comes first.
                out.append((capture.stem, family, server, message_id.split(",")[0]))
    return out


def handovers(history: History) -> list[tuple[str, str, str]]:
    """(Message-ID, family, address) of each hop the report says relayed the message (or its bounce) onward."""
    out = [(history.message_id, hop.family, hop.address) for hop in history.hops
           if hop.outcome == "relayed" and hop.address and history.message_id]
    for dsn in history.dsns:
        out += handovers(dsn)
    return out


@pytest.mark.parametrize("key", [("mx-routing", "broken"), ("relay-bounce", "fixed")])
def test_each_claimed_handover_is_an_smtp_session_over_its_family_in_the_captures(labs, key) -> None:
    lab = labs[key]
    run_dir = lab.result.run_dir.path
    assert {c.segment for c in lab.result.captures} == set(lab.plan.segments)
    seen = smtp_messages(run_dir)
    claimed = [h for history in lab.result.histories.values() for h in handovers(history)]
    assert claimed, "the report claims no handover at all"
    for message_id, family, address in claimed:
        sessions = [s for s in seen if s[3] == message_id and s[2] == address]
        assert sessions, f"no SMTP session to {address} with {message_id} in {run_dir / 'captures'}: {seen}"
        assert {s[1] for s in sessions} == {family}, f"{message_id} to {address}: the report says {family}"
    if key == ("relay-bounce", "fixed"):  # the bounce travels too, and is seen as one
        assert any(lab.result.histories[m].dsns and lab.result.histories[m].dsns[0].message_id in {s[3] for s in seen}
                   for m in lab.result.histories)


#: On-link IPv6 (neighbour discovery answering a lab address): no address of anything outside the lab.
ON_LINK = [ipaddress.ip_network("fe80::/10"), ipaddress.ip_network("ff02::/16")]


def test_the_captures_hold_the_labs_own_addresses_only(mx_broken) -> None:
    lab_subnets = [seg.lab_subnet(f) for seg in mx_broken.plan.segments.values() for f in seg.carries]
    gateways = {str(seg.gateway(f)) for seg in mx_broken.plan.segments.values() for f in seg.carries}

    def in_lab(address: str) -> bool:
        return any(ipaddress.ip_address(address) in net for net in lab_subnets if net is not None)

    packets = 0
    for capture in (mx_broken.result.run_dir.path / "captures").glob("*.pcap"):
        for row in tshark(capture, "ip or ipv6", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst"):
            packets += 1
            # An ICMP error quotes the packet it answers: its addresses come after the outer ones.
            outer = [field.split(",")[0] for field in row if field]
            every = {a for field in row for a in field.split(",") if a}
            assert any(in_lab(a) for a in outer), f"{capture.name}: a packet between {outer}, not a lab address"
            strangers = {a for a in every if not in_lab(a)
                         and not any(ipaddress.ip_address(a) in net for net in ON_LINK)}
            assert not strangers and not every & gateways, f"{capture.name}: {sorted(every)}"
    assert packets


def test_the_timeline_has_the_captured_sessions_of_each_message(mx_broken) -> None:
    text = (mx_broken.result.run_dir.path / "timeline.jsonl").read_text()
    captured = [e for e in map(json.loads, text.splitlines()) if e["source"] == "capture"]
    assert {e.get("message") for e in captured} >= {"m1", "m2"}
    assert any("over IPv6" in e["text"] and e.get("message") == "m1" for e in captured)
