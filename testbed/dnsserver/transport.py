"""UDP and TCP listeners.

Written on plain sockets rather than dnslib's DNSServer because the lab needs
things DNSServer does not offer: IPV6_V6ONLY before bind, several queries per
TCP connection (glibc pipelines A and AAAA on one connection after a
truncated UDP answer), replies sent later from another thread (delays) and
out of order, an idle timeout and a connection cap so a misbehaving client
cannot pin threads, and no thread per UDP datagram.

A listener hands every received message to
``on_message(data, peer, reply, received)`` on its own thread, where
``received`` is the monotonic arrival time; the callee answers, now or later
from any thread, through ``reply.send(wire)`` or ``reply.drop()``.
"""

from __future__ import annotations

import ipaddress
import select
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

# Long enough for any client to send its next pipelined query, short enough
# that idle connections do not pile up during a scenario.
TCP_IDLE_TIMEOUT_S = 10.0
MAX_TCP_CONNECTIONS = 64
# How long a reply may wait for room in a TCP send buffer before the
# connection is dropped: the sender is the scheduler thread, which must not
# stall behind a client that does not read.
TCP_SEND_GRACE_S = 0.2
# How long a connection stays open after the client's EOF for delayed replies.
TCP_DRAIN_S = 30.0
POLL_S = 0.2


@dataclass(frozen=True)
class Peer:
    client: str            # plain IPv4 for v4-mapped IPv6 clients
    client_port: int
    family: str            # "ipv4" | "ipv6"
    transport: str         # "udp" | "tcp"
    server: str            # the local listen address that received it


class Reply(Protocol):
    def send(self, wire: bytes) -> None: ...
    def drop(self) -> None: ...


OnMessage = Callable[[bytes, Peer, Reply, float], None]

# Kernel receive timestamps (Linux): a delay then counts from the moment the
# datagram reached the host, not from when a busy receive thread got to it.
# Python's socket module does not export the constant; 35 is its value on
# Linux x86, ARM and most other architectures (setsockopt fails harmlessly
# elsewhere and arrival falls back to the time the thread read the datagram).
_SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size) if _SO_TIMESTAMPNS is not None else 0


def _wall_minus_monotonic() -> tuple[float, float]:
    """(time.time() - time.monotonic(), monotonic now), read close together.

    If the thread is switched out between the two clock reads the offset is
    off by the pause, and a reply would leave early by as much; so read
    monotonic on both sides and retry when they are far apart.
    """
    for _ in range(5):
        m1 = time.monotonic()
        wall = time.time()
        m2 = time.monotonic()
        if m2 - m1 < 20e-6:
            break
    return wall - (m1 + m2) / 2, m2


def _arrival(ancdata: list[tuple[int, int, bytes]]) -> float:
    """Monotonic arrival time from SCM_TIMESTAMPNS, or now if unavailable."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(data) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(data)
            # The stamp is wall-clock time; map it onto the monotonic clock.
            offset, now = _wall_minus_monotonic()
            t = sec + nsec / 1e9 - offset
            # A stepped wall clock would give nonsense: only trust a stamp
            # that lies within the last few seconds.
            return t if now - 5.0 < t <= now else now
    return time.monotonic()


def make_peer(sockaddr: tuple[Any, ...], transport: str, server: str) -> Peer:
    host = str(sockaddr[0]).split("%", 1)[0]
    family = "ipv6" if ":" in host else "ipv4"
    try:
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            host, family = str(ip.ipv4_mapped), "ipv4"
    except ValueError:
        pass
    return Peer(host, int(sockaddr[1]), family, transport, server)


def wait_fd(sock: socket.socket, events: int, timeout: float) -> bool:
    """poll() one socket (no FD_SETSIZE limit, unlike select); True if ready."""
    poller = select.poll()
    poller.register(sock, events | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(max(0.0, timeout) * 1000))


def _wake(sock: socket.socket) -> None:
    """Wake a thread polling this socket so it sees the stop flag at once.

    On Linux, shutdown() wakes pollers even on an unconnected UDP socket
    (it still reports ENOTCONN); elsewhere the poll timeout does it.
    """
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _warn(msg: str) -> None:
    print(f"testbed-dns: {msg}", file=sys.stderr, flush=True)


def open_socket(address: str, port: int, kind: int, dual_stack: bool = False) -> socket.socket:
    """Bind a socket; an address with ':' is IPv6, V6ONLY unless ``dual_stack``."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # V6ONLY keeps "::" from also taking the IPv4 port, so a v4 and a
            # v6 listener on the same port never clash (Linux default is 0).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if dual_stack else 1)
        sock.bind((address, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(128)
        else:
            # A burst of queries must wait in the kernel while the machine is
            # busy, not be dropped: ask for more than the default buffer (the
            # kernel caps it at net.core.rmem_max, doubled), as DNS servers do.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
            if _SO_TIMESTAMPNS is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
                except OSError:
                    pass
        # Non-blocking throughout: waits are done with poll() by the owning
        # thread, so a send from the scheduler thread can never block on it.
        sock.setblocking(False)
        return sock
    except BaseException:
        sock.close()
        raise


class _UDPReply:
    __slots__ = ("_sock", "_addr")

    def __init__(self, sock: socket.socket, addr: tuple[Any, ...]) -> None:
        self._sock, self._addr = sock, addr

    def send(self, wire: bytes) -> None:
        # MSG_DONTWAIT: a full socket buffer loses this datagram (UDP may) but
        # never blocks the scheduler thread.
        self._sock.sendto(wire, socket.MSG_DONTWAIT, self._addr)

    def drop(self) -> None:
        pass


class UDPListener:
    def __init__(self, sock: socket.socket, address: str, on_message: OnMessage) -> None:
        self.sock, self.address, self.on_message = sock, address, on_message
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"dns-udp-{address}", daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def start(self) -> None:
        self.thread.start()

    def signal_stop(self) -> None:
        self._stop.set()
        _wake(self.sock)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                if not wait_fd(self.sock, select.POLLIN, POLL_S):
                    continue
                if _ANC_SIZE:
                    data, anc, _flags, addr = self.sock.recvmsg(65535, _ANC_SIZE)
                    received = _arrival(anc)
                else:
                    data, addr = self.sock.recvfrom(65535)
                    received = time.monotonic()
            except BlockingIOError:
                continue
            except OSError as e:
                if self._stop.is_set():
                    return
                _warn(f"udp recv on {self.address}: {e}")   # e.g. ICMP-induced ECONNREFUSED
                continue
            if self._stop.is_set() or addr is None:     # woken by shutdown() in signal_stop
                return
            try:
                self.on_message(data, make_peer(addr, "udp", self.address),
                                _UDPReply(self.sock, addr), received)
            except Exception as e:  # never let one packet kill the listener
                _warn(f"udp handler error from {addr[0]}: {type(e).__name__}: {e}")


class _TCPConnection:
    """One client connection: reads length-prefixed messages, sends replies in any order."""

    def __init__(self, sock: socket.socket, addr: tuple[Any, ...], listener: "TCPListener") -> None:
        self.sock, self.addr, self.listener = sock, addr, listener
        self.peer = make_peer(addr, "tcp", listener.address)
        self._lock = threading.Lock()          # one writer at a time on the stream
        self._cond = threading.Condition()
        self._pending = 0
        self._dead = False
        self.last_active = time.monotonic()     # last complete message received

    # -- reply side (any thread) --------------------------------------------
    def reply(self) -> "_TCPReply":
        with self._cond:
            self._pending += 1
        return _TCPReply(self)

    def _release(self) -> None:
        with self._cond:
            self._pending -= 1
            self._cond.notify_all()

    def _send(self, wire: bytes) -> None:
        buf = memoryview(struct.pack("!H", len(wire)) + wire)
        with self._lock:
            if self._dead:
                raise ConnectionError("connection already closed")
            deadline = time.monotonic() + TCP_SEND_GRACE_S
            try:
                while buf:
                    try:
                        buf = buf[self.sock.send(buf, socket.MSG_DONTWAIT):]
                    except BlockingIOError:
                        left = deadline - time.monotonic()
                        if left <= 0:
                            raise ConnectionError("client is not reading; connection dropped") from None
                        wait_fd(self.sock, select.POLLOUT, left)
            except OSError:
                self._dead = True
                self._shutdown()
                raise

    def evict(self) -> bool:
        """Close this connection to make room, unless replies are still due on it."""
        with self._cond:
            if self._pending > 0 or self._dead:
                return False
            self._dead = True
        self._shutdown()
        return True

    @property
    def dead(self) -> bool:
        return self._dead

    def _shutdown(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- read side (connection thread) --------------------------------------
    def run(self) -> None:
        try:
            while not self._dead and not self.listener.stopping.is_set():
                head = self._recv_exact(2)
                if head is None:
                    break
                (length,) = struct.unpack("!H", head)
                data = self._recv_exact(length) if length else b""
                if data is None:
                    self.listener.on_error(self.peer, f"tcp message truncated (wanted {length} bytes)")
                    break
                self.last_active = time.monotonic()
                self.listener.on_message(data, self.peer, self.reply(), self.last_active)
            # Let delayed replies for this connection go out before closing.
            with self._cond:
                self._cond.wait_for(lambda: self._pending <= 0 or self._dead, TCP_DRAIN_S)
        except Exception as e:
            _warn(f"tcp connection from {self.peer.client}: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._dead = True
                self._shutdown()
                self.sock.close()
            self.listener._forget(self)

    def _recv_exact(self, n: int) -> bytes | None:
        """Read n bytes; None on EOF, error, stop or ``idle_timeout`` without data."""
        chunks: list[bytes] = []
        got = 0
        idle_until = time.monotonic() + self.listener.idle_timeout
        while got < n:
            left = idle_until - time.monotonic()
            if left <= 0 or self._dead or self.listener.stopping.is_set():
                return None
            if not wait_fd(self.sock, select.POLLIN, min(left, POLL_S)):
                continue
            try:
                chunk = self.sock.recv(n - got)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)


class _TCPReply:
    __slots__ = ("_conn", "_done")

    def __init__(self, conn: _TCPConnection) -> None:
        self._conn, self._done = conn, False

    def send(self, wire: bytes) -> None:
        if self._done:
            return
        self._done = True
        try:
            self._conn._send(wire)
        finally:
            self._conn._release()

    def drop(self) -> None:
        if not self._done:
            self._done = True
            self._conn._release()


class TCPListener:
    def __init__(self, sock: socket.socket, address: str, on_message: OnMessage,
                 on_error: Callable[[Peer, str], None],
                 idle_timeout: float = TCP_IDLE_TIMEOUT_S,
                 max_connections: int = MAX_TCP_CONNECTIONS) -> None:
        self.sock, self.address = sock, address
        self.on_message, self.on_error = on_message, on_error
        self.idle_timeout, self.max_connections = idle_timeout, max_connections
        self.stopping = threading.Event()
        self._conns: set[_TCPConnection] = set()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name=f"dns-tcp-{address}", daemon=True)

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._conns)

    def start(self) -> None:
        self.thread.start()

    def signal_stop(self) -> None:
        self.stopping.set()
        _wake(self.sock)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with conn._lock:
                conn._dead = True
                conn._shutdown()

    def _forget(self, conn: _TCPConnection) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                if not wait_fd(self.sock, select.POLLIN, POLL_S):
                    continue
                sock, addr = self.sock.accept()
                sock.setblocking(False)
            except BlockingIOError:
                continue
            except OSError as e:
                if self.stopping.is_set():
                    return
                _warn(f"tcp accept on {self.address}: {e}")    # e.g. EMFILE: back off a little
                time.sleep(0.05)
                continue
            conn = _TCPConnection(sock, addr, self)
            victim, admitted = self._admit(conn)
            if victim is not None:
                self.on_error(victim.peer, f"idle tcp connection closed to make room "
                                           f"(max {self.max_connections})")
            if not admitted:
                self.on_error(conn.peer, f"too many busy tcp connections "
                                         f"(max {self.max_connections}); closed")
                sock.close()
                continue
            threading.Thread(target=conn.run, name="dns-tcp-conn", daemon=True).start()

    def _admit(self, conn: _TCPConnection) -> tuple[_TCPConnection | None, bool]:
        """Make room for a new connection: evict the longest-idle one if at the cap.

        Refusing newcomers instead would let a client holding idle
        connections lock everybody out of TCP (and so out of truncation
        fallback). Evicted connections' threads exit within POLL_S; counting
        them until then keeps the thread count under 2 x max_connections.
        """
        with self._lock:
            live = [c for c in self._conns if not c.dead]
            victim = None
            if len(live) >= self.max_connections:
                for cand in sorted(live, key=lambda c: c.last_active):
                    if cand.evict():
                        victim = cand
                        break
                if victim is None:
                    return None, False
            if len(self._conns) >= 2 * self.max_connections:
                return victim, False
            self._conns.add(conn)
            return victim, True
