"""The matrix benchmark's arithmetic (scripts/bench_matrix.py): cgroup files in, memory per lab out."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


@pytest.fixture(scope="module")
def bm():
    sys.path.insert(0, str(SCRIPTS))
    try:
        spec = importlib.util.spec_from_file_location("bench_matrix", SCRIPTS / "bench_matrix.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["bench_matrix"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("bench_matrix", None)
        sys.path.remove(str(SCRIPTS))


MIB = 1024 * 1024
V1_STAT = "cache 40960000\nrss 10485760\nrss_huge 0\nmapped_file 2097152\ntotal_rss 10485760\n"
V2_STAT = "anon 8388608\nfile 30000000\nfile_mapped 1048576\nkernel 1000\n"


def test_resident_memory_from_cgroup_v1_and_v2(bm) -> None:
    assert bm.resident_bytes(bm.parse_memory_stat(V1_STAT)) == 12 * MIB  # rss + mapped_file, not the cache
    assert bm.resident_bytes(bm.parse_memory_stat(V2_STAT)) == 9 * MIB  # anon + file_mapped
    assert bm.parse_memory_stat("junk\nrss x\n") == {}


def test_read_cgroup_takes_the_peak_file_of_either_version(bm, tmp_path: Path) -> None:
    (tmp_path / "memory.stat").write_text(V1_STAT)
    (tmp_path / "memory.max_usage_in_bytes").write_text("60000000\n")
    assert bm.read_cgroup(tmp_path) == (12 * MIB, 60000000)
    (tmp_path / "memory.max_usage_in_bytes").unlink()
    assert bm.read_cgroup(tmp_path) == (12 * MIB, None)
    (tmp_path / "memory.peak").write_text("70000000\n")
    assert bm.read_cgroup(tmp_path) == (12 * MIB, 70000000)
    assert bm.read_cgroup(tmp_path / "gone") is None  # removed at teardown


def test_a_labs_peak_is_the_largest_sum_at_one_sample(bm) -> None:
    lab = bm.LabMemory("mx-routing")
    lab.add(1.0, "relay", 30 * MIB, 50 * MIB)
    lab.add(1.0, "dns", 20 * MIB, 40 * MIB)
    lab.add(2.0, "relay", 40 * MIB, 55 * MIB)  # the relay grows while dns is no longer seen
    assert lab.peak_resident == 50 * MIB  # 30 + 20 at 1.0, not 40 + 20
    assert lab.cgroup_peak == 95 * MIB  # 55 + 40: each container's own peak
    assert lab.containers == 2


def test_summary_and_how_many_labs_fit(bm) -> None:
    assert bm.spread([3, 1, 2]) == (1, 2, 3)
    assert bm.spread([]) == (0.0, 0.0, 0.0)
    assert bm.labs_that_fit(1000 * MIB, 300 * MIB) == 3
    assert bm.labs_that_fit(1000 * MIB, 0) == 0
    labs = {}
    for run, scenario, size in (("a", "mx-routing", 300), ("b", "mx-routing", 200), ("c", "relay-bounce", 100)):
        labs[run] = bm.LabMemory(scenario)
        labs[run].add(0.0, "x", size * MIB, None)
    lines = bm.memory_report(labs, 2048 * MIB)
    assert lines[0].startswith("  every lab (3 labs, 1 containers): resident peak min 100 / median 200 / max 300 MiB")
    assert lines[1].startswith("  mx-routing (2 labs")
    assert lines[-1] == ("  memory available now 2.0 GiB: about 6 labs of the largest (300 MiB resident) "
                         "at once, by memory alone")


def test_matrix_outcomes_compared_cell_by_cell(bm) -> None:
    row = {"scenario": "mx-routing", "variant": "broken", "suite": "bookworm", "assignment": "all exim",
           "as_expected": True, "expectations": "7/7", "state": "bounce-queued", "path": ["relay", "mx30", "mx20"],
           "error": None, "run_dir": "runs/a"}
    other = {**row, "run_dir": "runs/b"}
    assert bm.compare_matrices([row], [other]) == []
    changed = {**row, "state": "lost", "as_expected": False}
    assert bm.compare_matrices([row], [changed]) == [
        "mx-routing/broken/bookworm/all exim: as_expected True -> False",
        "mx-routing/broken/bookworm/all exim: state 'bounce-queued' -> 'lost'",
    ]
    assert bm.compare_matrices([row], []) == ["mx-routing/broken/bookworm/all exim: only before"]
