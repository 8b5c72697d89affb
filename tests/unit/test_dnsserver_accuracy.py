"""Delay accuracy with 200 queries in flight (the issue's target: p99 within 5 ms)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.dnsserver.config import parse_config
from testbed.dnsserver.server import LabDNSServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
import bench_dns_delay as bench  # noqa: E402


@pytest.fixture()
def fast_gil_switch() -> Iterator[None]:
    # As the server's entry point does; restored for the rest of the suite.
    old = sys.getswitchinterval()
    sys.setswitchinterval(0.00025)
    yield
    sys.setswitchinterval(old)


def test_delays_with_200_in_flight_are_applied_and_never_early(tmp_path: Path, fast_gil_switch: None) -> None:
    """Correctness of delayed answers under load.

    The accuracy target (p99 within 5 ms) is a speed target: it is measured by
    scripts/bench_dns_delay.py, not asserted here. This test checks what must
    hold on any machine: every query answered, none early, the applied delay
    logged, and every delay really applied (an answer is never earlier than asked).
    """
    delays = list(range(10, 301, 10))
    log = tmp_path / "q.jsonl"
    with LabDNSServer(parse_config(bench.make_config(0, delays)), str(log)) as srv:
        results, lost = bench.run_client(srv.port, delays, inflight=200, total=800, timeout_s=30)
        srv.log.sync()
    assert lost == 0 and len(results) == 800
    client_late = sorted(applied - d for d, applied in results)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    server_late = sorted(e["delay_ms"] - e["requested_delay_ms"] for e in entries)
    assert len(entries) == 800
    assert client_late[0] >= 0 and server_late[0] >= 0  # never early: a lower bound clients can rely on
    assert {e["requested_delay_ms"] for e in entries} == set(delays)
