"""`testbed capture` and `testbed reset` in a real lab, through the commands as a user types them.

A capture is read back by Wireshark's tshark (not by the testbed's own
reader) and holds only the lab's addresses; its sidecar is gone when it
ends. A reset undoes a changed configuration, a queued message and a
stopped host, and the lab keeps its handle and run id.
"""

from __future__ import annotations

import ipaddress
import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from helpers import TESTBED, labs_up, run_testbed

from testbed import fabric
from testbed.capture import LIVE_KIND
from testbed.plan import LABEL_KIND

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "mx-routing.yaml"
@pytest.fixture(scope="module")
def live(docker_client, tmp_path_factory):
    """One mx-routing lab brought up with `testbed up`, removed after the module."""
    cwd = tmp_path_factory.mktemp("live-ops")
    with labs_up(docker_client, cwd, str(TOPOLOGY), "--ttl", "2h") as labs:
        yield cwd, labs[0]


def start_capture(cwd: Path, *args: str) -> tuple[subprocess.Popen, list[str]]:
    """`testbed capture ARGS` in the background, once tcpdump listens; its standard error lines so far."""
    proc = subprocess.Popen([*TESTBED, "capture", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for raw in proc.stderr:
            lines.put(raw.decode("utf-8", "replace").rstrip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    while True:
        line = lines.get(timeout=120)
        if line is None:
            pytest.fail(f"testbed capture ended before it listened: {seen}")
        seen.append(line)
        if "listening on" in line:
            return proc, seen


def ping(cwd: Path, lab: dict, source: str, target: str, count: int) -> None:
    v4 = next(a for a in lab["hosts"][target]["addresses"] if ipaddress.ip_address(a).version == 4)
    proc = run_testbed("exec", lab["handle"], source, "--", "ping", "-c", str(count), "-i", "0.2", v4, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def lab_subnets(lab: dict) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(n) for s in lab["segments"].values() for n in s["subnets"]]


def addresses_in(tshark_args: list[str], stdin: bytes | None = None) -> list[list[str]]:
    cmd = ["tshark", *tshark_args, "-T", "fields", "-E", "separator=|",
           "-e", "ip.src", "-e", "ip.dst", "-e", "ipv6.src", "-e", "ipv6.dst"]
    proc = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    assert proc.returncode == 0, proc.stderr.decode()
    return [[a for a in line.split("|") if a] for line in proc.stdout.decode().splitlines()]


def live_captures(docker_client, run_id: str) -> list[dict]:
    return [c for c in fabric.lab_containers(docker_client, run_id) if c["Labels"].get(LABEL_KIND) == LIVE_KIND]


def test_capture_writes_a_pcap_file_of_the_labs_traffic_only(live, docker_client, tmp_path) -> None:
    cwd, lab = live
    target = tmp_path / "core.pcap"
    proc, _ = start_capture(cwd, lab["handle"], "core", "-w", str(target), "--count", "10")
    ping(cwd, lab, "client", "mx10", 8)  # 16 packets on core: the capture ends at 10
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    packets = addresses_in(["-r", str(target)])
    assert len(packets) == 10
    subnets = lab_subnets(lab)
    for addresses in packets:
        for a in addresses:
            assert any(ipaddress.ip_address(a) in n for n in subnets), f"{a} is not a lab address"
    assert any(addresses for addresses in packets)  # echo requests and replies, not only ARP
    assert live_captures(docker_client, lab["run_id"]) == []


def test_sigterm_ends_a_capture_piped_to_tshark_whole(live, docker_client) -> None:
    cwd, lab = live
    proc, _ = start_capture(cwd, lab["handle"], "core", "-w", "-", "--filter", "icmp")
    ping(cwd, lab, "client", "mx10", 3)
    proc.send_signal(signal.SIGTERM)
    pcap, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    packets = addresses_in(["-r", "-"], stdin=pcap)  # tshark reads the stream to its end: no packet cut short
    assert len(packets) == 6, packets
    assert live_captures(docker_client, lab["run_id"]) == []


def test_a_filter_tcpdump_cannot_read_is_bad_input(live, docker_client) -> None:
    cwd, lab = live
    proc = run_testbed("capture", lab["handle"], "core", "--filter", "port smtpp", "--count", "1", cwd=cwd,
                       timeout=120)
    assert proc.returncode == 2 and "--filter" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert live_captures(docker_client, lab["run_id"]) == []


def test_reset_undoes_changes_queues_and_stopped_hosts(live) -> None:
    cwd, lab = live
    handle = lab["handle"]

    def in_lab(host: str, command: str) -> subprocess.CompletedProcess[str]:
        return run_testbed("exec", handle, host, command, cwd=cwd)

    lifetime = in_lab("mx20", "postconf -h bounce_queue_lifetime").stdout.strip()
    assert in_lab("mx20", "postconf -e bounce_queue_lifetime=1h defer_transports=relay,smtp,lmtp && postfix reload"
                  ).returncode == 0
    # A message mx20 holds: every transport it could leave by is deferred (brainbird.nl goes by "relay").
    assert in_lab("mx20", "echo hold | sendmail -f user@brainbird.nl user@brainbird.nl").returncode == 0
    queued = in_lab("mx20", "for i in $(seq 50); do postqueue -j | grep -q . && exit 0; sleep 0.2; done; exit 1")
    assert queued.returncode == 0, "mx20 never queued the message"
    assert run_testbed("stop", handle, "mx30", cwd=cwd).returncode == 0

    proc = run_testbed("reset", handle, cwd=cwd)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{handle} is reset" in proc.stdout

    assert in_lab("mx20", "postconf -h bounce_queue_lifetime").stdout.strip() == lifetime
    assert in_lab("mx20", "postconf -h defer_transports").stdout.strip() == ""
    assert in_lab("mx20", "postqueue -j").stdout.strip() == ""
    assert in_lab("mx30", "postfix status").returncode == 0  # the stopped host runs again
    ps = json.loads(run_testbed("ps", "--json", cwd=cwd).stdout)
    row = next(r for r in ps if r["handle"] == handle)
    assert row["run_id"] == lab["run_id"] and row["containers"] == len(lab["hosts"])
    assert row["expires_in"].endswith("min")  # its time to live is kept
