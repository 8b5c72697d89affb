"""Delay accuracy with 200 queries in flight (the issue's target: p99 within 5 ms)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Iterator

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


def _one_run(tmp_path: Path, attempt: int) -> tuple[float, float, str]:
    delays = list(range(10, 301, 10))
    log = tmp_path / f"q{attempt}.jsonl"
    with LabDNSServer(parse_config(bench.make_config(0, delays)), str(log)) as srv:
        results, lost = bench.run_client(srv.port, delays, inflight=200, total=800, timeout_s=30)
        srv.log.sync()
    assert lost == 0 and len(results) == 800
    client = sorted(applied - d for d, applied in results)
    server = sorted(e["delay_ms"] - e["requested_delay_ms"]
                    for e in map(json.loads, log.read_text().splitlines()))
    # Never early, in any run: the delay is a lower bound clients can rely on.
    assert client[0] >= 0 and server[0] >= 0
    p99_server, p99_client = bench.percentile(server, 99), bench.percentile(client, 99)
    return p99_server, p99_client, f"server p99 {p99_server:.3f} ms, client p99 {p99_client:.3f} ms"


def test_delay_accuracy_200_in_flight(tmp_path: Path, fast_gil_switch: None) -> None:
    # Timing on a shared machine: another process hogging both CPUs for a few
    # ms can spoil one run, so the target must be met in one of three runs;
    # every run must still never answer early.
    seen = []
    for attempt in range(3):
        p99_server, p99_client, text = _one_run(tmp_path, attempt)
        seen.append(text)
        # The client shares this interpreter (and its GIL) with the server
        # here, so its view gets some slack; scripts/bench_dns_delay.py
        # measures from a separate process against the 5 ms target.
        if p99_server <= 5.0 and p99_client <= 7.5:
            break
    else:
        pytest.fail("delay accuracy target missed in 3 runs: " + "; ".join(seen))
    print("; ".join(seen))
