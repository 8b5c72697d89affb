"""`testbed doctor`'s reading of an engine: firewall parsing and what the facts mean (no Docker)."""

from __future__ import annotations

from testbed.engine_check import EngineFacts, Firewall, RoutingProbe, assess, labs_will_work, parse_firewall

# iptables-save output as engine 28.5.2 left it with one router and two hosts up (trimmed).
RECORDED_28_5 = """## raw4
*raw
:PREROUTING ACCEPT [2:168]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -d 198.19.254.2/32 -i tbab12cd34b -j ACCEPT
-A PREROUTING -d 198.19.254.2/32 ! -i tbab12cd34a -j DROP
-A PREROUTING -d 198.19.255.10/32 ! -i tbab12cd34b -j DROP
COMMIT
## raw6
*raw
-A PREROUTING -d 2001:db8:fffe::2/128 ! -i tbab12cd34a -j DROP
COMMIT
## filter6
*filter
:DOCKER - [0:0]
:DOCKER-FORWARD - [0:0]
COMMIT
## nf
1
1
"""


def test_parse_firewall_counts_direct_access_drops_and_reads_br_netfilter() -> None:
    fw = parse_firewall(RECORDED_28_5)
    assert (fw.direct_access_drops_v4, fw.direct_access_drops_v6) == (2, 1)
    assert fw.bridge_nf_call_iptables is True and fw.bridge_nf_call_ip6tables is True
    assert fw.ip6tables is True


def test_parse_firewall_of_an_engine_without_rules_or_br_netfilter() -> None:
    fw = parse_firewall("## raw4\n*raw\nCOMMIT\n## raw6\n## filter6\n*filter\nCOMMIT\n## nf\n")
    assert fw == Firewall(0, 0, None, None, False)


def test_a_28_5_engine_with_trusted_bridges_works_and_shows_what_it_drops_without() -> None:
    facts = EngineFacts("28.5.2", (1, 51), probes=[RoutingProbe(True, True, trusted=True),
                                                   RoutingProbe(False, False, trusted=False)])
    findings = assess(facts)
    assert labs_will_work(findings)
    texts = [f.text for f in findings]
    assert any("without trusted bridges): IPv4 DROPPED, IPv6 DROPPED" in t for t in texts)
    assert any("trusted_host_interfaces" in t for t in texts)


def test_a_failed_probe_says_labs_will_not_work_and_what_to_do() -> None:
    findings = assess(EngineFacts("20.10.24", (1, 41), probes=[RoutingProbe(True, False, trusted=False)]))
    assert not labs_will_work(findings)
    assert any(f.level == "problem" and "IPv6 DROPPED" in f.text for f in findings)
    assert any("testbed engine run" in f.text for f in findings if f.level == "problem")


def test_28_0_without_trusted_interfaces_is_told_to_upgrade() -> None:
    findings = assess(EngineFacts("28.1.1", (1, 49), probes=[RoutingProbe(False, False, trusted=False)]))
    assert any("upgrade to Docker 28.2" in f.text for f in findings if f.level == "problem")


def test_no_image_yet_means_no_probe_and_no_verdict_against_the_engine() -> None:
    facts = EngineFacts("20.10.24", (1, 41), probe_note="no testbed image on this engine yet")
    findings = assess(facts)
    assert labs_will_work(findings) and [f.level for f in findings] == ["note"]
