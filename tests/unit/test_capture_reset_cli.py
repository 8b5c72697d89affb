"""`testbed capture` and `testbed reset` without Docker: tcpdump's command line, and the CLI on a fake lab."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from recorded import mx_routing_plan

from testbed import cli_live
from testbed.capture import SNAPLEN, lab_filter, live_command, live_filter
from testbed.cli import main
from testbed.errors import CaptureFailed

# --- tcpdump's command line -----------------------------------------------------------------


def test_a_users_filter_is_anded_with_the_lab_filter() -> None:
    plan = mx_routing_plan()
    assert live_filter(plan) == lab_filter(plan)
    assert live_filter(plan, "  ") == lab_filter(plan)
    assert live_filter(plan, "tcp port 25 or icmp") == f"({lab_filter(plan)}) and (tcp port 25 or icmp)"


def test_text_lines_are_numeric_and_line_buffered() -> None:
    argv = live_command("br-abc", "net 10.0.0.0/24")
    assert argv == ["tcpdump", "-i", "br-abc", "--immediate-mode", "-n", "-s", str(SNAPLEN), "-l", "net 10.0.0.0/24"]
    assert "-w" not in argv and "-c" not in argv


def test_pcap_goes_to_stdout_a_packet_at_a_time_and_a_count_stops_it() -> None:
    argv = live_command("br-abc", "(a) and (b)", count=10, pcap=True)
    assert argv[:5] == ["tcpdump", "-i", "br-abc", "--immediate-mode", "-n"]
    assert argv[argv.index("-w") + 1] == "-" and "-U" in argv and "-l" not in argv
    assert argv[argv.index("-c") + 1] == "10"
    assert argv[-1] == "(a) and (b)"  # one argument: tcpdump never splits a filter given whole


# --- the CLI on a fake lab ------------------------------------------------------------------


class FakeCapture:
    def __init__(self, chunks: list[bytes], fail: str | None = None):
        self.chunks, self.fail, self.stopped, self.closed = chunks, fail, False, False

    def __iter__(self):
        yield from self.chunks
        if self.fail:
            raise CaptureFailed(self.fail)

    def stop(self) -> None:
        self.stopped = True

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


class FakeLive:
    """What the live-lab commands use of a ``fabric.Lab``, on the recorded mx-routing plan."""

    def __init__(self, capture: FakeCapture | None = None):
        self.plan = mx_routing_plan(run_id="3e61604f")
        self.plan.labels["testbed.handle"] = "mx-routing-1"
        self.capture = capture or FakeCapture([b"12:00:00.000 IP 10.1.0.100 > 10.1.0.10: ICMP echo request\n"])
        self.calls: list[tuple] = []
        self.progress = None

    def live_capture(self, segment, bpf, count, pcap, on_message):  # noqa: ANN001 - fabric.Lab's signature
        self.calls.append(("capture", segment, bpf, count, pcap))
        on_message("listening on br-x, link-type EN10MB (Ethernet)")
        return self.capture

    def remove_hosts(self) -> int:
        self.calls.append(("remove_hosts",))
        return len(self.plan.hosts)

    def up(self, files, data_dirs) -> None:  # noqa: ANN001
        self.calls.append(("up", sorted(files), data_dirs))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeLive:
    live = FakeLive()
    monkeypatch.setattr(cli_live, "_attach", lambda name: (None, live))
    return live


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_an_unknown_segment_is_one_usage_error_naming_the_labs_segments(fake: FakeLive) -> None:
    result = invoke("capture", "mx-routing-1", "cor")
    assert result.exit_code == 2, result.output
    assert "has no segment 'cor'" in result.output and "did you mean 'core'" in result.output
    assert "its segments: core, v4net, v6net" in result.output
    assert "Traceback" not in result.output and fake.calls == []


def test_text_lines_go_to_stdout_as_they_come(fake: FakeLive) -> None:
    result = invoke("capture", "mx-routing-1", "core", "--filter", "icmp", "--count", "3")
    assert result.exit_code == 0, result.output
    assert "ICMP echo request" in result.stdout
    assert fake.calls == [("capture", "core", "icmp", 3, False)] and fake.capture.closed


def test_w_file_writes_the_pcap_bytes(fake: FakeLive, tmp_path: Path) -> None:
    fake.capture = FakeCapture([b"\xd4\xc3\xb2\xa1header", b"packet1", b"packet2"])
    target = tmp_path / "core.pcap"
    result = invoke("capture", "mx-routing-1", "core", "-w", str(target))
    assert result.exit_code == 0, result.output
    assert target.read_bytes() == b"\xd4\xc3\xb2\xa1headerpacket1packet2"
    assert fake.calls == [("capture", "core", None, None, True)] and fake.capture.closed


def test_w_dash_writes_pcap_bytes_to_stdout(fake: FakeLive) -> None:
    fake.capture = FakeCapture([b"\xd4\xc3\xb2\xa1", b"\x00\xff"])
    result = invoke("capture", "mx-routing-1", "core", "-w", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"\xd4\xc3\xb2\xa1\x00\xff"


def test_a_filter_tcpdump_cannot_read_is_a_usage_error(fake: FakeLive) -> None:
    fake.capture = FakeCapture([], fail="tcpdump on segment core could not capture: "
                                        "tcpdump: syntax error in filter expression: syntax error")
    result = invoke("capture", "mx-routing-1", "core", "--filter", "port smtpp")
    assert result.exit_code == 2, result.output
    assert "--filter" in result.output and "syntax error" in result.output and "Traceback" not in result.output
    assert fake.capture.closed


def test_reset_makes_every_host_again_from_the_plan(fake: FakeLive) -> None:
    result = invoke("reset", "mx-routing-1")
    assert result.exit_code == 0, result.output
    assert fake.calls[0] == ("remove_hosts",)
    what, hosts, data_dirs = fake.calls[1]
    assert what == "up" and hosts == sorted(fake.plan.hosts)
    assert data_dirs["mx20"] and data_dirs["bb-imap"]  # queues and mailboxes come back empty
    assert "mx-routing-1 is reset" in result.stdout and " s" in result.stdout
