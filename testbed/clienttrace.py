"""What a client did, from ``tb-trace``'s output: its lookups and its connection attempts (pure).

``tb-trace`` (``images/client/tb-trace``) runs a mail client inside the client
container with the ``tb-gai-trace.so`` getaddrinfo shim preloaded and tcpdump
capturing the container's TCP handshakes and ICMP errors, and prints one JSON
object. ``parse_trace`` turns that object into a ``ClientTrace``:

* one ``Lookup`` per getaddrinfo call naming a host (calls without a node,
  such as a passive bind, are not lookups);
* one ``Attempt`` per TCP flow the client opened (its source port and the
  server's address and port), from the packets: the first SYN starts it; a
  SYN-ACK from the server means connected, a RST refused, an ICMP destination
  unreachable naming the server's address unreachable. A flow without an
  answer ends at the next attempt's start after its last SYN (the client moved
  on: ``timeout``) or at the process's end (``timeout``, or ``unanswered``
  when another attempt connected: it was abandoned, not given up on). The
  packets cannot show when a client closed a socket still connecting, so for a
  client racing families (curl's Happy Eyeballs) an unanswered first attempt
  ends where the second starts, after the client's own delay.

Malformed input raises ``ValueError`` with one message naming what is wrong.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: tb-trace's output format this parser reads.
TRACE_VERSION = 1

RESULTS = ("connected", "refused", "timeout", "unreachable", "unanswered")


@dataclass(frozen=True)
class Lookup:
    name: str
    #: Who answered: "getaddrinfo" (the system resolver, glibc), "override"
    #: (tb-trace's override file), "model:<name>" (a resolver model's answer) or
    #: the name of real resolver software that answered instead (``c-ares``).
    resolver: str
    started: float
    duration_ms: float
    addresses: list[str] = field(default_factory=list)
    error: str | None = None
    override: bool = False
    #: The AF_* family the caller asked for: 0 any, 2 IPv4, 10 IPv6.
    family: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Attempt:
    address: str
    family: str  # ipv4 | ipv6
    port: int
    started: float
    ended: float
    result: str  # connected | refused | timeout | unreachable | unanswered
    #: The client's source port (the flow's identity) and how many SYNs it sent.
    source_port: int = 0
    syns: int = 1
    #: The client's source address (the kernel's choice: a temporary or an extra address shows here).
    source: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.ended - self.started) * 1e3

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "duration_ms": round(self.duration_ms, 3)}


@dataclass(frozen=True)
class ClientTrace:
    started: float
    ended: float
    rc: int
    stdout: str
    stderr: str
    lookups: list[Lookup]
    attempts: list[Attempt]
    resolver: dict[str, Any] | None = None

    @property
    def connected(self) -> Attempt | None:
        """The first attempt that connected (by the time its SYN-ACK came)."""
        ok = [a for a in self.attempts if a.result == "connected"]
        return min(ok, key=lambda a: a.ended) if ok else None

    @property
    def total_ms(self) -> float:
        return (self.ended - self.started) * 1e3

    def to_dict(self) -> dict[str, Any]:
        connected = self.connected
        return {
            "started": self.started,
            "ended": self.ended,
            "total_ms": round(self.total_ms, 3),
            "rc": self.rc,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "lookups": [lk.to_dict() for lk in self.lookups],
            "attempts": [a.to_dict() for a in self.attempts],
            "connected": connected.to_dict() if connected else None,
            "resolver": self.resolver,
        }


# ------------------------------------------------------------------ parsing

_TOP_KEYS = {"version": int, "started": (int, float), "ended": (int, float), "rc": int, "stdout": str,
             "stderr": str, "lookups": list, "packets": list}

#: "EPOCH [IFACE DIR] IP|IP6 REST" (tcpdump -tt, with -i any the interface and direction).
_PACKET_RE = re.compile(
    r"^(?P<t>\d+\.\d+)\s+(?:(?P<iface>\S+)\s+(?P<dir>In|Out|B|M|P)\s+)?(?P<proto>IP6?)\s+(?P<rest>.*)$"
)
_TCP_RE = re.compile(
    r"^(?P<src>\S+)\.(?P<sport>\d+) > (?P<dst>\S+)\.(?P<dport>\d+): Flags \[(?P<flags>[^\]]*)\](?:, seq (?P<seq>\d+))?"
)
_ICMP_RE = re.compile(r"^(?P<src>\S+) > (?P<dst>\S+): (?P<icmp>ICMP6?\b.*)$")
_ADDR_TOKEN_RE = re.compile(r"[0-9A-Fa-f:.]*[:.][0-9A-Fa-f:.]*")


def _addr(text: str) -> str | None:
    """The normalised address, or None if ``text`` is not one."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


@dataclass
class _Flow:
    address: str
    port: int
    source_port: int
    started: float
    last_syn: float
    seq: str | None = None
    syns: int = 1
    result: str | None = None
    ended: float | None = None
    source: str = ""


@dataclass(frozen=True)
class _Packet:
    t: float
    kind: str  # tcp | icmp
    src: str
    dst: str
    sport: int = 0
    dport: int = 0
    flags: str = ""
    seq: str | None = None
    unreachable: str | None = None  # ICMP: the address it says is unreachable
    outgoing: bool | None = None  # from -i any's direction, None if absent


def _parse_packet(line: str) -> _Packet | None:
    """One tcpdump line; None for lines that are not a TCP segment or an ICMP unreachable."""
    m = _PACKET_RE.match(line)
    if not m:
        return None
    t = float(m["t"])
    direction = m["dir"]
    outgoing = None if direction is None else direction == "Out"
    rest = m["rest"]
    tcp = _TCP_RE.match(rest)
    if tcp:
        src, dst = _addr(tcp["src"]), _addr(tcp["dst"])
        if src is None or dst is None:
            return None
        return _Packet(t, "tcp", src, dst, int(tcp["sport"]), int(tcp["dport"]), tcp["flags"], tcp["seq"],
                       outgoing=outgoing)
    icmp = _ICMP_RE.match(rest)
    if icmp and "unreachable" in icmp["icmp"]:
        src, dst = _addr(icmp["src"]), _addr(icmp["dst"])
        # The unreachable address is the first address inside the ICMP text:
        # "ICMP host 10.2.0.25 unreachable", "ICMP6, destination unreachable, unreachable route 2001:db8::25".
        inner = next((a for a in map(_addr, _ADDR_TOKEN_RE.findall(icmp["icmp"])) if a), None)
        if src is None or dst is None or inner is None:
            return None
        return _Packet(t, "icmp", src, dst, unreachable=inner, outgoing=outgoing)
    return None


def _family(address: str) -> str:
    return "ipv6" if ipaddress.ip_address(address).version == 6 else "ipv4"


def _attempts(packets: list[str], client_addrs: set[str], process_end: float) -> list[Attempt]:
    mine = {a for a in map(_addr, client_addrs) if a}
    flows: list[_Flow] = []
    open_flows: dict[tuple[str, int, str, int], _Flow] = {}

    # An address the lab did not plan (an RFC 4941 temporary one) is still the
    # client's: "-i any" gives each packet its direction.
    def is_outgoing(p: _Packet) -> bool | None:
        if p.src in mine:
            return True
        if p.dst in mine:
            return False
        return p.outgoing

    for line in packets:
        p = _parse_packet(line)
        if p is None:
            continue
        out = is_outgoing(p)
        if out is None:
            continue
        if p.kind == "icmp":
            if out:
                continue
            for flow in open_flows.values():
                if flow.address == p.unreachable and flow.result in (None, "unreachable") and p.t >= flow.started:
                    flow.result, flow.ended = "unreachable", p.t
            continue
        syn, ack, rst = "S" in p.flags, "." in p.flags, "R" in p.flags
        if out:
            key = (p.src, p.sport, p.dst, p.dport)
            if not syn or ack:
                continue
            flow = open_flows.get(key)
            # The same SYN again (same sequence number) is the kernel retransmitting it,
            # also after an ICMP error (Linux retries once after "no route"); another
            # sequence number on the same ports is a new connection.
            if flow is not None and (flow.result is None or (flow.result == "unreachable" and p.seq == flow.seq)):
                flow.syns += 1
                flow.last_syn = p.t
                continue
            flow = _Flow(p.dst, p.dport, p.sport, p.t, p.t, p.seq, source=p.src)
            open_flows[key] = flow
            flows.append(flow)
        else:
            key = (p.dst, p.dport, p.src, p.sport)
            flow = open_flows.get(key)
            if flow is None or flow.result is not None:
                continue
            if syn and ack:
                flow.result, flow.ended = "connected", p.t
            elif rst:
                flow.result, flow.ended = "refused", p.t

    flows.sort(key=lambda f: f.started)
    any_connected = any(f.result == "connected" for f in flows)
    out_attempts = []
    for flow in flows:
        result, ended = flow.result, flow.ended
        if result is None:
            later = [f.started for f in flows if f.started > flow.last_syn]
            if later and min(later) <= process_end:
                result, ended = "timeout", min(later)
            else:
                result = "unanswered" if any_connected else "timeout"
                ended = max(process_end, flow.last_syn)
        assert ended is not None
        out_attempts.append(Attempt(flow.address, _family(flow.address), flow.port, flow.started, ended, result,
                                    flow.source_port, flow.syns, flow.source))
    return out_attempts


def _lookup(entry: Any, index: int, answered_by: str | None) -> Lookup | None:
    where = f"lookups[{index}]"
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a JSON object")
    if "unparsed" in entry:
        raise ValueError(f"{where}: the shim wrote a line that is not JSON: {str(entry['unparsed'])[:80]!r}")
    for key, kind in (("t", (int, float)), ("dur_ms", (int, float)), ("addresses", list)):
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            raise ValueError(f"{where}: {key!r} is missing or not a {'list' if kind is list else 'number'}")
    node = entry.get("node")
    if node is None:
        return None
    if not isinstance(node, str):
        raise ValueError(f"{where}: 'node' is not a string")
    error = entry.get("error")
    if error is not None and not isinstance(error, str):
        raise ValueError(f"{where}: 'error' is not a string or null")
    if not all(isinstance(a, str) for a in entry["addresses"]):
        raise ValueError(f"{where}: 'addresses' holds something that is not a string")
    override = entry.get("override") is True
    resolver = (answered_by or "override") if override else "getaddrinfo"
    family = entry.get("family", 0)
    return Lookup(node, resolver, float(entry["t"]), float(entry["dur_ms"]), list(entry["addresses"]), error,
                  override, family if isinstance(family, int) else 0)


def _load(text: str) -> dict[str, Any]:
    """tb-trace's JSON output, its shape checked."""
    text = text.strip()
    if not text:
        raise ValueError("tb-trace printed nothing (did it fail? its stderr says why)")
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"tb-trace output is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("tb-trace output is not a JSON object")
    for key, kind in _TOP_KEYS.items():
        if key not in data:
            raise ValueError(f"tb-trace output has no {key!r}")
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ValueError(f"tb-trace output: {key!r} has the wrong type ({type(data[key]).__name__})")
    if data["version"] != TRACE_VERSION:
        raise ValueError(f"tb-trace output version {data['version']}, this testbed reads {TRACE_VERSION}")
    if not all(isinstance(p, str) for p in data["packets"]):
        raise ValueError("tb-trace output: 'packets' holds something that is not a tcpdump line")
    runs = data.get("runs")
    if runs is not None:
        if not isinstance(runs, list) or not runs:
            raise ValueError("tb-trace output: 'runs' is not a non-empty list")
        for i, run in enumerate(runs):
            if not isinstance(run, dict):
                raise ValueError(f"tb-trace output: runs[{i}] is not an object")
            for key in ("started", "ended", "rc", "stdout", "stderr"):
                kind = _TOP_KEYS[key]
                if not isinstance(run.get(key), kind) or isinstance(run.get(key), bool):
                    raise ValueError(f"tb-trace output: runs[{i}].{key} is missing or has the wrong type")
    return data


def _resolver_label(resolver: Any) -> str | None:
    """How the lookups a resolver program answered are labelled: model:<name>, or the real resolver's name."""
    if resolver is None:
        return None
    if not isinstance(resolver, dict):
        raise ValueError("tb-trace output: 'resolver' is not an object or null")
    if resolver.get("model"):
        return f"model:{resolver['model']}"
    return str(resolver.get("resolver") or "resolver")


def _trace(run: dict[str, Any], lookups: list[Any], packets: list[str], client_addrs: set[str]) -> ClientTrace:
    resolver = run.get("resolver")
    label = _resolver_label(resolver)
    parsed = [lk for i, e in enumerate(lookups) if (lk := _lookup(e, i, label)) is not None]
    return ClientTrace(
        started=float(run["started"]),
        ended=float(run["ended"]),
        rc=run["rc"],
        stdout=run["stdout"],
        stderr=run["stderr"],
        lookups=parsed,
        attempts=_attempts(packets, client_addrs, float(run["ended"])),
        resolver=resolver,
    )


def parse_trace(text: str, client_addrs: set[str]) -> ClientTrace:
    """tb-trace's JSON output -> ClientTrace; ``client_addrs`` are the client's own addresses.

    With ``--repeat`` output, this is the whole span (every run's lookups and attempts, the first run's output).
    """
    data = _load(text)
    return _trace(data, data["lookups"], data["packets"], client_addrs)


def parse_runs(text: str, client_addrs: set[str]) -> list[ClientTrace]:
    """tb-trace's output -> one ClientTrace per run (``--repeat N``: N; otherwise one).

    Lookups and packets belong to the run whose window they fall in: from the
    run's start to the next run's start (a connection's closing packets may
    come after its run ended).
    """
    data = _load(text)
    runs = data.get("runs")
    if runs is None:
        return [_trace(data, data["lookups"], data["packets"], client_addrs)]
    starts = [float(r["started"]) for r in runs]

    def index_of(t: float) -> int:
        return max(0, sum(1 for s in starts if s <= t) - 1)

    lookups: list[list[Any]] = [[] for _ in runs]
    for entry in data["lookups"]:
        t = entry.get("t") if isinstance(entry, dict) else None
        lookups[index_of(float(t)) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0].append(entry)
    packets: list[list[str]] = [[] for _ in runs]
    for line in data["packets"]:
        m = _PACKET_RE.match(line)
        packets[index_of(float(m["t"])) if m else 0].append(line)
    return [_trace(run, lookups[i], packets[i], client_addrs) for i, run in enumerate(runs)]
