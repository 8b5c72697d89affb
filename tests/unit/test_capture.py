"""Packet capture: the sidecar's filter and script, and reading captures recorded from a real lab."""

from __future__ import annotations

import io
import json
import socket
import stat
import subprocess
from pathlib import Path

import dpkt
import pytest
from recorded import DATA, mx_routing_plan

from testbed import pcapread, timeline
from testbed.capture import CAPTURE_DIR, FAILED_PREFIX, READY_LINE, lab_filter, segment_captures, sidecar_script, \
    tcpdump_counts

#: mx-routing/broken with Postfix on bookworm, captured by the sidecar (run 1cbf4415).
RECORDED = DATA / "captures" / "postfix-bookworm-mx-routing-broken"


def recorded(segment: str) -> pcapread.CaptureReading:
    with open(RECORDED / f"{segment}.pcap", "rb") as f:
        return pcapread.read_capture(f)


def recorded_connections() -> list[pcapread.SeenConnection]:
    return pcapread.merge_segments({s: recorded(s) for s in ("core", "v4net", "v6net")})


# --- the sidecar ----------------------------------------------------------------------------


def test_the_filter_keeps_the_lab_subnets_and_never_the_machines_bridge_address() -> None:
    plan = mx_routing_plan()
    bpf = lab_filter(plan)
    for seg in plan.segments.values():
        for family in seg.carries:
            assert str(seg.lab_subnet(family)) in bpf
            assert f"host {seg.gateway(family)}" in bpf.split(" and not ", 1)[1]
    v6net = plan.segments["v6net"]
    assert v6net.placeholder_v4 and str(v6net.subnet_v4) not in bpf  # the engine's placeholder is no lab subnet
    assert bpf.startswith("(net ") and " or ip6 net " in bpf


def test_one_capture_per_segment_on_its_bridge() -> None:
    plan = mx_routing_plan()
    caps = segment_captures(plan)
    assert [(c.segment, c.bridge, c.file) for c in caps] == [
        (s.name, s.bridge, f"captures/{s.name}.pcap") for s in sorted(plan.segments.values(), key=lambda s: s.name)]


def _fake_tcpdump(bin_dir: Path, body: str) -> None:
    path = bin_dir / "tcpdump"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _run_sidecar(tmp_path: Path, body: str) -> subprocess.CompletedProcess[str]:
    """The sidecar's script in a real sh, with a stand-in tcpdump and the capture directory under tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _fake_tcpdump(bin_dir, body)
    script = sidecar_script(segment_captures(mx_routing_plan())).replace(CAPTURE_DIR, str(tmp_path / "captures"))
    return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60,
                          env={"PATH": f"{bin_dir}:/usr/bin:/bin"}, check=False)


def test_the_sidecar_is_ready_once_every_tcpdump_listens_and_ends_with_their_counts(tmp_path: Path) -> None:
    proc = _run_sidecar(tmp_path, 'echo "listening on $2, link-type EN10MB" >&2; sleep 0.3; '
                                  'echo "7 packets captured" >&2; echo "0 packets dropped by kernel" >&2\n')
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert lines[0] == READY_LINE and "testbed: capture stopped" in lines
    assert tcpdump_counts(proc.stdout) == {"captured": 7, "dropped": 0}


def test_a_tcpdump_that_cannot_open_its_bridge_fails_the_sidecar_with_its_words(tmp_path: Path) -> None:
    bridge = mx_routing_plan().segments["v6net"].bridge
    proc = _run_sidecar(tmp_path, f'if [ "$2" = {bridge} ]; then '
                                  'echo "tcpdump: $2: No such device exists" >&2; exit 1; fi\n'
                                  'echo "listening on $2" >&2; exec sleep 30\n')
    assert proc.returncode == 1
    assert proc.stdout.startswith(FAILED_PREFIX)
    assert f"{bridge}: No such device exists" in proc.stdout
    assert READY_LINE not in proc.stdout


# --- reading captures -------------------------------------------------------------------------


def test_the_recorded_sessions_show_each_handover_over_its_family() -> None:
    ids = json.loads((RECORDED / "message-ids.json").read_text())
    sessions = [s for s in recorded_connections() if s.connection.is_smtp and s.connection.result == "answered"]
    path = [(s.connection.client, s.connection.server, s.connection.family) for s in sessions
            if ids["m1"] in s.connection.message_ids]
    # client -> relay -> mx30 over IPv4, mx30 -> mx20 over IPv6 (the backup MX of the wrong family).
    assert path == [("198.18.1.100", "198.18.3.25", "ipv4"), ("198.18.3.25", "198.18.1.30", "ipv4"),
                    ("2001:db8:1::30", "2001:db8:2::20", "ipv6")]
    first = next(s for s in sessions if ids["m1"] in s.connection.message_ids)
    assert first.segments == ("core", "v4net")  # routed: seen on both sides of the router, kept once
    assert first.connection.commands()[:3] == ["EHLO client.skimbee.net", "MAIL FROM:<user@skimbee.net>",
                                               "RCPT TO:<unknown_user@brainbird.nl>"]
    assert any(r.startswith("250 2.0.0 Ok: queued as") for r in first.connection.replies())


def test_connections_to_a_stopped_host_are_seen_unanswered() -> None:
    unanswered = [s.connection for s in recorded_connections() if s.connection.result == "no answer"]
    assert {(c.server, c.server_port) for c in unanswered} >= {("198.18.1.10", 25), ("2001:db8:1::10", 25)}
    assert all(c.packets >= 1 and not c.smtp for c in unanswered)


def test_the_rejected_session_has_no_message_and_says_why() -> None:
    rejected = [s.connection for s in recorded_connections()
                if any(r.startswith("554") for r in s.connection.replies())]
    assert len(rejected) == 1 and rejected[0].message_ids == []
    assert pcapread.summary(rejected[0]).endswith("554 5.5.1 Error: no valid recipients")


def test_a_capture_cut_short_keeps_what_it_holds_and_says_so() -> None:
    data = (RECORDED / "core.pcap").read_bytes()
    whole = pcapread.read_capture(io.BytesIO(data))
    cut = pcapread.read_capture(io.BytesIO(data[:-7]))
    assert cut.truncated and not whole.truncated
    assert cut.packets == whole.packets  # the cut packet is read as far as it goes
    assert [c.key for c in cut.connections] == [c.key for c in whole.connections]


@pytest.mark.parametrize("content", [b"", b"not a capture at all", b"\xd4\xc3\xb2"])
def test_a_file_that_is_not_a_capture_reads_as_none(content: bytes) -> None:
    reading = pcapread.read_capture(io.BytesIO(content))
    assert reading.connections == [] and reading.truncated


# --- sessions built packet by packet: BDAT, STARTTLS, bounces, broken frames ---------------------


class _Flow:
    """One TCP connection written into a pcap, packet by packet."""

    def __init__(self, writer: dpkt.pcap.Writer, client: str, server: str, port: int = 25) -> None:
        self.writer, self.t = writer, 1_800_000_000.0
        self.family = socket.AF_INET6 if ":" in client else socket.AF_INET
        self.ends = {"client": (client, 40000), "server": (server, port)}
        self.seq = {"client": 1000, "server": 5000}

    def send(self, side: str, flags: int, data: bytes = b"") -> None:
        other = "server" if side == "client" else "client"
        (src, sport), (dst, dport) = self.ends[side], self.ends[other]
        tcp = dpkt.tcp.TCP(sport=sport, dport=dport, seq=self.seq[side], flags=flags, data=data)
        if self.family == socket.AF_INET6:
            ip = dpkt.ip6.IP6(src=socket.inet_pton(self.family, src), dst=socket.inet_pton(self.family, dst),
                              nxt=dpkt.ip.IP_PROTO_TCP, hlim=64, data=tcp, plen=len(bytes(tcp)))
            eth_type = dpkt.ethernet.ETH_TYPE_IP6
        else:
            ip = dpkt.ip.IP(src=socket.inet_pton(self.family, src), dst=socket.inet_pton(self.family, dst),
                            p=dpkt.ip.IP_PROTO_TCP, data=tcp)
            eth_type = dpkt.ethernet.ETH_TYPE_IP
        self.t += 0.01
        self.writer.writepkt(bytes(dpkt.ethernet.Ethernet(type=eth_type, data=ip)), self.t)
        self.seq[side] += len(data) + (1 if flags & (dpkt.tcp.TH_SYN | dpkt.tcp.TH_FIN) else 0)

    def handshake(self) -> None:
        self.send("client", dpkt.tcp.TH_SYN)
        self.send("server", dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK)


def _read(build) -> pcapread.CaptureReading:
    buffer = io.BytesIO()
    writer = dpkt.pcap.Writer(buffer)
    build(writer)
    buffer.seek(0)
    return pcapread.read_capture(buffer)


ACK = dpkt.tcp.TH_ACK


def test_bdat_chunks_are_content_not_commands() -> None:
    body = b"Message-ID: <b1@x>\r\nSubject: s\r\n\r\nEHLO inside the body\r\n"

    def build(writer):
        flow = _Flow(writer, "2001:db8::1", "2001:db8::2")
        flow.handshake()
        flow.send("server", ACK, b"220 mx ESMTP\r\n")
        flow.send("client", ACK, b"EHLO a\r\n")
        flow.send("server", ACK, b"250-mx\r\n250 CHUNKING\r\n")
        flow.send("client", ACK, b"MAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nBDAT %d LAST\r\n" % len(body) + body[:20])
        flow.send("client", ACK, body[20:])
        flow.send("server", ACK, b"250 OK\r\n250 Accepted\r\n250 OK id=1\r\n")
        flow.send("client", ACK, b"QUIT\r\n")

    conn = _read(build).connections[0]
    assert conn.family == "ipv6" and conn.result == "answered"
    assert conn.commands() == ["EHLO a", "MAIL FROM:<a@x>", "RCPT TO:<b@y>", f"BDAT {len(body)} LAST", "QUIT"]
    assert conn.message_ids == ["<b1@x>"] and not conn.report
    assert conn.replies() == ["220 mx ESMTP", "250 CHUNKING", "250 OK", "250 Accepted", "250 OK id=1"]


def test_a_bounce_is_recognised_and_names_the_message_it_returns() -> None:
    dsn = (b"Message-ID: <dsn1@mx20>\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n"
           b"\tboundary=b\r\n\r\n--b\r\n\r\nundeliverable\r\n--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
           b"Message-ID: <m1.run@client>\r\n--b--\r\n")

    def build(writer):
        flow = _Flow(writer, "198.18.1.20", "198.18.1.100")
        flow.handshake()
        flow.send("client", ACK, b"EHLO mx20\r\nMAIL FROM:<>\r\nRCPT TO:<user@skimbee.net>\r\nDATA\r\n")
        flow.send("client", ACK, dsn + b".\r\n")
        flow.send("server", ACK, b"250 2.0.0 Ok: queued as X1\r\n")

    seen = pcapread.merge_segments({"core": _read(build)})
    assert seen[0].connection.report and seen[0].connection.message_ids == ["<dsn1@mx20>", "<m1.run@client>"]
    [entry] = timeline.build([], [], [], [], [], {}, "dns", 2026, captured=seen,
                             message_ids={"m1": "<m1.run@client>"}, host_of={"198.18.1.20": "mx20"}.get)
    assert (entry.source, entry.host, entry.message) == ("capture", "mx20", "m1 bounce")
    assert "bounce <dsn1@mx20>" in entry.text and "250 2.0.0 Ok: queued as X1" in entry.text


def test_after_starttls_nothing_more_is_read() -> None:
    def build(writer):
        flow = _Flow(writer, "198.18.1.1", "198.18.1.2")
        flow.handshake()
        flow.send("server", ACK, b"220 mx ESMTP\r\n")
        flow.send("client", ACK, b"EHLO a\r\n")
        flow.send("server", ACK, b"250-mx\r\n250 STARTTLS\r\n")
        flow.send("client", ACK, b"STARTTLS\r\n")
        flow.send("server", ACK, b"220 2.0.0 Ready to start TLS\r\n")
        flow.send("client", ACK, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40))
        flow.send("server", ACK, b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03" + bytes(40))

    conn = _read(build).connections[0]
    assert conn.tls and conn.commands() == ["EHLO a", "STARTTLS"]
    assert conn.replies() == ["220 mx ESMTP", "250 STARTTLS", "220 2.0.0 Ready to start TLS"]
    assert "STARTTLS: unreadable" in pcapread.summary(conn)


def test_a_refused_connection_and_a_broken_frame() -> None:
    def build(writer):
        flow = _Flow(writer, "198.18.1.1", "198.18.1.2")
        flow.send("client", dpkt.tcp.TH_SYN)
        writer.writepkt(b"\x00\x01\x02", 1_800_000_000.5)  # shorter than an Ethernet header
        flow.send("server", dpkt.tcp.TH_RST | ACK)

    reading = _read(build)
    assert reading.undecodable == 1 and reading.packets == 3
    [conn] = reading.connections
    assert conn.result == "refused" and pcapread.summary(conn).endswith("over IPv4: refused")
