"""The running server: listeners, engine, query log, wired together."""

from __future__ import annotations

import errno
import socket
import threading
import time
from typing import Any

from .config import Config
from .engine import Engine, Outcome, internal_error
from .querylog import QueryLog, wall_clock
from .rules import RuleBook, RuleError, parse_rules
from .scheduler import Scheduler
from .transport import (
    MAX_TCP_CONNECTIONS,
    TCP_IDLE_TIMEOUT_S,
    Peer,
    Reply,
    TCPListener,
    UDPListener,
    open_socket,
)
from .zones import ZoneSet


class BindError(Exception):
    """A listen address/port could not be bound; the message says which and why."""


class LabDNSServer:
    def __init__(self, config: Config, query_log: str | None = None, *,
                 keep_log: int = 0,
                 tcp_idle_timeout: float = TCP_IDLE_TIMEOUT_S,
                 max_tcp_connections: int = MAX_TCP_CONNECTIONS) -> None:
        self.config = config
        self.engine = Engine(ZoneSet(config.zones), RuleBook(config.rules))
        self.log_path = query_log
        self.log = QueryLog(query_log, keep=keep_log)
        self.scheduler = Scheduler()
        self._rules_lock = threading.Lock()     # serialises set/add/clear
        self._count_lock = threading.Lock()
        self.messages = 0                       # messages received, all transports
        self.tcp_idle_timeout = tcp_idle_timeout
        self.max_tcp_connections = max_tcp_connections
        self.port = config.port
        self.udp: list[UDPListener] = []
        self.tcp: list[TCPListener] = []
        self._started = False

    # -- lifecycle ----------------------------------------------------------
    def _listeners(self) -> list[UDPListener | TCPListener]:
        return [*self.udp, *self.tcp]

    def start(self) -> "LabDNSServer":
        """Bind every socket (or none: raises BindError) and start serving."""
        self._bind_all()
        for listener in self._listeners():
            listener.start()
        self._started = True
        return self

    def stop(self) -> None:
        listeners = self._listeners()
        for listener in listeners:      # signal all first: the joins then overlap
            listener.signal_stop()
        for listener in listeners:
            listener.stop()
        self.udp, self.tcp = [], []
        self.scheduler.stop()
        self.log.close()
        self._started = False

    def __enter__(self) -> "LabDNSServer":
        return self.start() if not self._started else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def describe(self) -> str:
        addrs = ", ".join(f"[{a}]:{self.port}" if ":" in a else f"{a}:{self.port}"
                          for a in self.config.listen)
        return f"listening on {addrs}/udp+tcp"

    def _bind_all(self) -> None:
        listen = self.config.listen
        # "::" alone serves both families (clients then appear as ::ffff:a.b.c.d
        # and are logged as IPv4); any IPv4 address in the list makes every v6
        # socket V6ONLY so the two never clash.
        dual = not any(":" not in a for a in listen)
        attempts = 20 if self.config.port == 0 else 1
        for attempt in range(attempts):
            port = self.config.port
            socks: list[tuple[str, socket.SocketKind, socket.socket]] = []
            try:
                for addr in listen:
                    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                        proto = "udp" if kind == socket.SOCK_DGRAM else "tcp"
                        try:
                            s = open_socket(addr, port, kind, dual_stack=dual and addr == "::")
                        except OSError as e:
                            raise BindError(f"cannot bind {addr} port {port}/{proto}: "
                                            f"{e.strerror or e}") from e
                        socks.append((addr, kind, s))
                        if port == 0:
                            port = int(s.getsockname()[1])   # the rest share this port
            except BindError as e:
                for _a, _k, s in socks:
                    s.close()
                cause = e.__cause__
                if (attempt + 1 < attempts and isinstance(cause, OSError)
                        and cause.errno == errno.EADDRINUSE):
                    continue   # ephemeral port taken on another address: try another
                raise
            self.port = port
            for addr, kind, s in socks:
                if kind == socket.SOCK_DGRAM:
                    self.udp.append(UDPListener(s, addr, self._on_message))
                else:
                    self.tcp.append(TCPListener(s, addr, self._on_message, self._on_error,
                                                self.tcp_idle_timeout, self.max_tcp_connections))
            return

    # -- per message ----------------------------------------------------------
    def _on_message(self, data: bytes, peer: Peer, reply: Reply, received: float) -> None:
        with self._count_lock:
            self.messages += 1
        wall = time.time() - (time.monotonic() - received)
        try:
            outcome = self.engine.handle(data, peer)
        except Exception as e:  # a bug must cost one answer, not the listener
            outcome = internal_error(data, e)
        if outcome.wire is not None and outcome.delay_ms > 0:
            # Due time counts from receipt, so parsing and lookup time is part
            # of the delay rather than added to it.
            self.scheduler.call_at(received + outcome.delay_ms / 1000.0,
                                   lambda: self._send(outcome, peer, reply, received, wall),
                                   on_cancel=reply.drop)
            return
        self._send(outcome, peer, reply, received, wall)

    # -- rules (also reached through the control socket) ---------------------
    def list_rules(self) -> list[dict[str, Any]]:
        """Active rules in order, as canonical dicts with ``hits`` (and ``preset``)."""
        return [r.describe() for r in self.engine.rules.rules]

    def set_rules(self, raw: Any) -> list[RuleError]:
        """Replace all rules; on any problem change nothing and return the problems."""
        rules, errors = parse_rules(raw)
        if errors:
            return errors
        with self._rules_lock:
            self.engine.rules = RuleBook(rules)
        return []

    def add_rules(self, raw: Any) -> list[RuleError]:
        """Append rules after the active ones (their counters carry on)."""
        with self._rules_lock:
            current = self.engine.rules
            rules, errors = parse_rules(raw, start=len(current), taken=current.names())
            if errors:
                return errors
            self.engine.rules = RuleBook([*current.rules, *rules])
        return []

    def clear_rules(self) -> None:
        with self._rules_lock:
            self.engine.rules = RuleBook()

    def _send(self, outcome: Outcome, peer: Peer, reply: Reply, received: float, wall: float) -> None:
        entry = outcome.entry
        if outcome.wire is None:
            reply.drop()
            self.log.write(self._log_line(peer, received, wall, entry, None))
            return
        # The line is queued *before* the reply leaves, so anyone who has seen
        # the answer and then syncs the log is sure to find the line.
        delay = round((time.monotonic() - received) * 1000, 3)
        self.log.write(self._log_line(peer, received, wall, entry, delay))
        try:
            reply.send(outcome.wire)
        except OSError as e:
            self._on_error(peer, f"send of reply id {entry.get('id')} failed: {e}")

    def _on_error(self, peer: Peer, message: str) -> None:
        now = time.monotonic()
        entry: dict[str, Any] = {"id": None, "name": None, "type": None, "rcode": None, "answers": [],
                 "rule": None, "error": message}
        self.log.write(self._log_line(peer, now, time.time(), entry, None))

    @staticmethod
    def _log_line(peer: Peer, received: float, wall: float, entry: dict[str, Any],
                  delay: float | None) -> dict[str, Any]:
        line: dict[str, Any] = {
            "t_ms": round(received * 1000, 3), "wall": wall_clock(wall),
            "client": peer.client, "client_port": peer.client_port,
            "family": peer.family, "transport": peer.transport, "server": peer.server,
        }
        line.update(entry)
        line["delay_ms"] = delay
        return line

    # -- introspection (tests) ------------------------------------------------
    def thread_count(self) -> int:
        return threading.active_count()
