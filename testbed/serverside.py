"""Which server received each client connection, from the servers' own logs (pure).

A client step's capture says where the client *sent* each connection; the
servers' logs (``MtaAdapter.parse_connections``) say who *received* one. The
two are joined on the client's source address and port where the server logs
the port (Postfix with ``smtpd_client_port_logging``, Exim with
``+incoming_port``), else on the source address and the time (Sendmail logs
microseconds, no port). Each logged connection is claimed once.
"""

from __future__ import annotations

from collections.abc import Iterable

from .clientrun import ClientResult
from .events import ServerConnection

#: How far a server's log time may lie from the client's SYN-ACK (log lines are written after accept()).
_SLACK_S = 2.0


def attribute(clients: Iterable[ClientResult], connections: list[ServerConnection]) -> dict[str, dict[int, str]]:
    """client result id -> {attempt index -> the host that logged that connection}."""
    by_port: dict[tuple[str, int], list[ServerConnection]] = {}
    timed: dict[str, list[ServerConnection]] = {}
    for conn in connections:
        if conn.client_port is not None:
            by_port.setdefault((conn.client_address, conn.client_port), []).append(conn)
        elif conn.time is not None:
            timed.setdefault(conn.client_address, []).append(conn)
    claimed: set[int] = set()
    out: dict[str, dict[int, str]] = {}
    ordered = sorted(clients, key=lambda r: r.trace.started)
    for result in ordered:
        found: dict[int, str] = {}
        for index, attempt in enumerate(result.attempts):
            if attempt.result != "connected" or not attempt.source:
                continue
            candidates = by_port.get((attempt.source, attempt.source_port), [])
            if not candidates:
                candidates = [c for c in timed.get(attempt.source, [])
                              if c.time is not None and attempt.started - _SLACK_S <= c.time <= attempt.ended + _SLACK_S]
            # Source ports are reused over a long run: the one nearest in time, if the log has times.
            candidates = sorted((c for c in candidates if id(c) not in claimed),
                                key=lambda c: abs((c.time or attempt.ended) - attempt.ended))
            if candidates:
                claimed.add(id(candidates[0]))
                found[index] = candidates[0].host
        out[result.id] = found
    return out

