"""A segment's capture -> TCP connections and the SMTP sessions in them (pure; dpkt reads the pcap).

Each TCP connection is keyed by its first SYN (client address and port, server
address and port). Its ``result`` says how the server side answered the SYN:
``answered`` (SYN-ACK), ``refused`` (RST) or ``no answer`` (nothing came back
in the capture: a black hole, a host that is down, a router that drops it).

An SMTP connection (server port 25 or 587) is read as a session: the client's
commands, each with the time of the segment that carried it, without the
message content (DATA's lines, BDAT's bytes) but with the content's
Message-ID headers and whether it is a delivery status report (a bounce);
and the server's replies, one line per reply (its last line). After STARTTLS
nothing more can be read, and the session says so.

A packet the reader cannot decode is counted, never fatal; so is a capture
cut short (a sidecar stopped while writing).
"""

from __future__ import annotations

import io
import re
import socket
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import dpkt

SMTP_PORTS = frozenset({25, 587})
_MESSAGE_ID = re.compile(rb"^message-id:\s*(<[^>\r\n]*>)", re.IGNORECASE | re.MULTILINE)
_REPORT = re.compile(rb"^content-type:\s*multipart/report", re.IGNORECASE | re.MULTILINE)
_BDAT = re.compile(rb"^BDAT\s+(\d+)(\s+LAST)?\s*$", re.IGNORECASE)


@dataclass
class SmtpLine:
    t: float
    side: str  # client | server
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 6), "side": self.side, "text": self.text}


@dataclass
class Connection:
    started: float
    family: str  # ipv4 | ipv6
    client: str
    client_port: int
    server: str
    server_port: int
    result: str = "no answer"  # answered | refused | no answer
    ended: float | None = None
    smtp: list[SmtpLine] = field(default_factory=list)
    #: Message-ID headers of the messages sent in this session, in order.
    message_ids: list[str] = field(default_factory=list)
    #: The content sent was a delivery status report (multipart/report).
    report: bool = False
    tls: bool = False  # the session went on under STARTTLS, unreadable here
    packets: int = 0

    @property
    def key(self) -> tuple[str, int, str, int]:
        return (self.client, self.client_port, self.server, self.server_port)

    @property
    def is_smtp(self) -> bool:
        return self.server_port in SMTP_PORTS

    def commands(self) -> list[str]:
        return [line.text for line in self.smtp if line.side == "client"]

    def replies(self) -> list[str]:
        return [line.text for line in self.smtp if line.side == "server"]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "started": round(self.started, 6),
            "ended": round(self.ended, 6) if self.ended is not None else None,
            "family": self.family,
            "client": self.client,
            "client_port": self.client_port,
            "server": self.server,
            "server_port": self.server_port,
            "result": self.result,
            "packets": self.packets,
        }
        if self.is_smtp:
            out.update(smtp=[line.to_dict() for line in self.smtp], message_ids=self.message_ids,
                       report=self.report, tls=self.tls)
        return out


@dataclass
class CaptureReading:
    connections: list[Connection]
    packets: int = 0
    undecodable: int = 0  # packets that are not Ethernet/IP/TCP-or-other the reader understands
    truncated: bool = False  # the file ends inside a packet record


@dataclass
class _Stream:
    """One direction of a connection: payload by sequence number, with the time each byte arrived."""

    chunks: dict[int, tuple[float, bytes]] = field(default_factory=dict)

    def add(self, seq: int, t: float, data: bytes) -> None:
        if data and seq not in self.chunks:  # a retransmission carries the same bytes again
            self.chunks[seq] = (t, data)

    def ordered(self) -> list[tuple[float, bytes]]:
        """The bytes in sequence order, each chunk with its time, overlaps cut off."""
        out: list[tuple[float, bytes]] = []
        end: int | None = None
        for seq in sorted(self.chunks, key=lambda s: (s - min(self.chunks)) % 2**32):
            t, data = self.chunks[seq]
            if end is not None:
                skip = (end - seq) % 2**32
                if skip >= len(data) and skip < 2**31:
                    continue
                if skip < 2**31:
                    data = data[skip:]
            out.append((t, data))
            end = (seq + len(self.chunks[seq][1])) % 2**32
        return out


def _lines(chunks: list[tuple[float, bytes]]) -> Iterable[tuple[float, bytes]]:
    """Whole CRLF lines, each with the time of the chunk that completed it."""
    buffer = b""
    for t, data in chunks:
        buffer += data
        *complete, buffer = buffer.split(b"\n")
        for raw in complete:
            yield t, raw.rstrip(b"\r")


def _client_side(conn: Connection, chunks: list[tuple[float, bytes]]) -> list[SmtpLine]:
    """The client's commands, the message content skipped (its Message-IDs and kind kept)."""
    out: list[SmtpLine] = []
    buffer = b""
    content = b""
    mode = "command"  # command | data (DATA's lines up to ".") | bdat (BDAT's bytes)
    remaining = 0
    last_chunk = False
    for t, data in chunks:
        buffer += data
        while buffer:
            if mode == "bdat":
                take, buffer = buffer[:remaining], buffer[remaining:]
                content += take
                remaining -= len(take)
                if remaining:
                    break
                mode = "command"
                if last_chunk:
                    _content_seen(conn, content)
                    content = b""
                continue
            if b"\n" not in buffer:
                break
            raw, buffer = buffer.split(b"\n", 1)
            line = raw.rstrip(b"\r")
            if mode == "data":
                if line == b".":
                    mode = "command"
                    _content_seen(conn, content)
                    content = b""
                    out.append(SmtpLine(t, "client", "."))
                else:
                    content += line + b"\n"
                continue
            text = line.decode("utf-8", "replace")
            out.append(SmtpLine(t, "client", text))
            verb = text.split(" ", 1)[0].upper()
            if verb == "DATA":
                mode = "data"
            elif verb == "STARTTLS":
                conn.tls = True
                return out
            elif (bdat := _BDAT.match(line)) is not None:
                remaining, last_chunk = int(bdat.group(1)), bool(bdat.group(2))
                mode = "bdat" if remaining else "command"
                if not remaining and last_chunk:
                    _content_seen(conn, content)
                    content = b""
    return out


def _content_seen(conn: Connection, content: bytes) -> None:
    content = content.replace(b"\r\n", b"\n")
    header = content.split(b"\n\n", 1)[0]
    report = bool(_REPORT.search(header))
    # A bounce returns the original's headers in its body: their Message-ID follows the bounce's own.
    conn.message_ids += [m.decode("ascii", "replace") for m in _MESSAGE_ID.findall(content if report else header)]
    conn.report = conn.report or report


def _server_side(chunks: list[tuple[float, bytes]], tls: bool) -> list[SmtpLine]:
    """One line per reply: the last line of a multi-line reply ("250 SIZE ..." after "250-...")."""
    out: list[SmtpLine] = []
    for t, line in _lines(chunks):
        text = line.decode("utf-8", "replace")
        if len(text) >= 4 and text[3] == "-":
            continue
        out.append(SmtpLine(t, "server", text))
        if tls and text.startswith("220") and len(out) > 1:
            break  # the reply to STARTTLS: what follows is encrypted
    return out


def _address(family: str, raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if family == "ipv6" else socket.AF_INET, raw)


def _ends_inside_a_record(data: bytes) -> bool:
    """Whether the last packet record is cut short (dpkt hands such a packet on without a word)."""
    magic = data[:4]
    order = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    offset = 24
    while offset + 16 <= len(data):
        (caplen,) = struct.unpack_from(order + "I", data, offset + 8)
        offset += 16 + caplen
    return offset != len(data)


def read_capture(source: BinaryIO) -> CaptureReading:
    """Connections in the order of their first SYN (a capture without a readable header: none)."""
    data = source.read()
    try:
        reader = dpkt.pcap.Reader(io.BytesIO(data))
    except (ValueError, dpkt.dpkt.Error):
        return CaptureReading([], truncated=True)
    connections: dict[tuple[str, int, str, int], Connection] = {}
    streams: dict[tuple[tuple[str, int, str, int], str], _Stream] = {}
    reading = CaptureReading([], truncated=_ends_inside_a_record(data))
    packets = iter(reader)
    while True:
        try:
            t, frame = next(packets)
        except StopIteration:
            break
        except (ValueError, dpkt.dpkt.Error):
            reading.truncated = True
            break
        reading.packets += 1
        try:
            eth = dpkt.ethernet.Ethernet(frame)
        except (dpkt.dpkt.Error, ValueError):
            reading.undecodable += 1
            continue
        ip = eth.data
        if isinstance(ip, dpkt.ip.IP):
            family = "ipv4"
        elif isinstance(ip, dpkt.ip6.IP6):
            family = "ipv6"
        else:
            continue  # ARP and the like: not a connection
        tcp = ip.data
        if not isinstance(tcp, dpkt.tcp.TCP):
            continue
        src, dst = _address(family, ip.src), _address(family, ip.dst)
        forward = (src, tcp.sport, dst, tcp.dport)
        backward = (dst, tcp.dport, src, tcp.sport)
        syn, ack = bool(tcp.flags & dpkt.tcp.TH_SYN), bool(tcp.flags & dpkt.tcp.TH_ACK)
        if syn and not ack and forward not in connections:
            connections[forward] = Connection(float(t), family, src, tcp.sport, dst, tcp.dport)
        if forward in connections:
            conn, side = connections[forward], "client"
        elif backward in connections:
            conn, side = connections[backward], "server"
        else:
            continue  # a connection that began before the capture did
        conn.packets += 1
        if side == "server" and conn.result == "no answer":
            if syn and ack:
                conn.result = "answered"
            elif tcp.flags & dpkt.tcp.TH_RST:
                conn.result = "refused"
        if tcp.flags & (dpkt.tcp.TH_FIN | dpkt.tcp.TH_RST):
            conn.ended = float(t)
        payload = bytes(tcp.data)
        if payload:
            streams.setdefault((conn.key, side), _Stream()).add(tcp.seq, float(t), payload)
    for conn in connections.values():
        if not conn.is_smtp or conn.result != "answered":
            continue
        client = streams.get((conn.key, "client"), _Stream()).ordered()
        server = streams.get((conn.key, "server"), _Stream()).ordered()
        lines = _client_side(conn, client) + _server_side(server, conn.tls)
        conn.smtp = sorted(lines, key=lambda line: line.t)
    reading.connections = sorted(connections.values(), key=lambda c: c.started)
    return reading


def _family_word(family: str) -> str:
    return "IPv6" if family == "ipv6" else "IPv4"


def summary(conn: Connection) -> str:
    """One line for the timeline: who talked to whom over which family, and what was said."""
    client = f"[{conn.client}]" if conn.family == "ipv6" else conn.client
    server = f"[{conn.server}]" if conn.family == "ipv6" else conn.server
    head = f"{client}:{conn.client_port} -> {server}:{conn.server_port} over {_family_word(conn.family)}"
    if conn.result != "answered" or not conn.is_smtp:
        return f"{head}: {conn.result}"
    verbs = [c.split(" ", 1)[0].split(":", 1)[0].upper() for c in conn.commands() if c != "."]
    said = " ".join(dict.fromkeys(verbs)) or "nothing"
    replies = conn.replies()
    last = next((r for r in reversed(replies) if r.startswith("250") and "queued" in r.lower()), None)
    last = last or next((r for r in reversed(replies) if r[:1] in "45"), None) or (replies[-1] if replies else "")
    what = "bounce " if conn.report else ""
    ids = f" {what}{', '.join(conn.message_ids)}" if conn.message_ids else ""
    tls = " (then STARTTLS: unreadable)" if conn.tls else ""
    return f"SMTP {head}: {said}{ids}{tls}; {last}".rstrip("; ")


@dataclass
class SeenConnection:
    """A connection as the lab's captures show it: on every segment it crossed (a router forwards it)."""

    connection: Connection
    segments: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**self.connection.to_dict(), "segments": list(self.segments)}


def merge_segments(readings: dict[str, CaptureReading]) -> list[SeenConnection]:
    """Each connection once, from the segment that saw most of it, in the order of their first SYN."""
    by_key: dict[tuple[str, int, str, int], list[tuple[str, Connection]]] = {}
    for segment, reading in sorted(readings.items()):
        for conn in reading.connections:
            by_key.setdefault(conn.key, []).append((segment, conn))
    out = []
    for views in by_key.values():
        _, best = max(views, key=lambda v: (v[1].packets, -v[1].started))
        best.started = min(c.started for _, c in views)
        out.append(SeenConnection(best, tuple(s for s, _ in views)))
    return sorted(out, key=lambda s: s.connection.started)
