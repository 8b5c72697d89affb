"""Packet capture on every segment of a lab (pure: the plan in, a sidecar's script and filters out).

One sidecar per lab, in the engine's own network namespace (``network_mode=host``)
with NET_RAW and NET_ADMIN, runs one ``tcpdump`` per segment on the segment's
Linux bridge (the plan names it). A bridge hands frames it forwards between its
ports up to its own device only while it is promiscuous, which is tcpdump's
default, so the bridge device sees every frame between the segment's hosts
(docs: ../shared/notes/docker.md, section 7). The sidecar never sends a packet.

The filter keeps the lab's own addresses only: a packet is written when its
source or destination lies in one of the lab's subnets (every segment's, since
a router forwards one segment's traffic onto another), never the bridge's own
address (the machine's, not a lab host's). Link-local traffic (neighbour
discovery, router advertisements) is left out with it.

The sidecar's script reports on its standard output (the container's log):
``testbed: capturing`` once every tcpdump has opened its bridge, and
``testbed: capture failed`` with tcpdump's words when one cannot.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from .plan import LabPlan

CAPTURE_DIR = "/captures"
READY_LINE = "testbed: capturing"
FAILED_PREFIX = "testbed: capture failed"
#: A packet's first 64 KiB: whole SMTP segments, so a reader sees every command and reply.
SNAPLEN = 65535
#: Each packet handed to tcpdump as it arrives. Without it libpcap passes packets on in
#: blocks, up to a second late, and a tcpdump stopped meanwhile never writes the last ones
#: (seen: a capture stopped right after a ping lacked its last echo and reply).
IMMEDIATE = "--immediate-mode"


@dataclass(frozen=True)
class SegmentCapture:
    segment: str
    family: str  # the segment's family (ipv4 | ipv6 | dual)
    bridge: str
    file: str  # relative to the run directory: captures/<segment>.pcap
    bpf: str

    @property
    def sidecar_path(self) -> str:
        return f"{CAPTURE_DIR}/{self.segment}.pcap"

    @property
    def sidecar_err(self) -> str:
        """tcpdump's standard error: "listening on ...", its closing counts, or why it could not start."""
        return f"{CAPTURE_DIR}/{self.segment}.err"


def lab_filter(plan: LabPlan) -> str:
    """A BPF filter for the lab's own traffic: to or from a lab subnet, never the machine's bridge address."""
    nets: list[str] = []
    gateways: list[str] = []
    for seg in plan.segments.values():
        for family in sorted(seg.carries):
            subnet = seg.lab_subnet(family)
            if subnet is None:
                continue
            word = "net" if family == "ipv4" else "ip6 net"
            nets.append(f"{word} {subnet}")
            gateway = seg.gateway(family)
            if gateway is not None:
                gateways.append(f"host {gateway}")
    if not nets:
        return "less 0"  # no lab subnet: capture nothing rather than everything
    keep = "(" + " or ".join(nets) + ")"
    return f"{keep} and not ({' or '.join(gateways)})" if gateways else keep


def segment_captures(plan: LabPlan) -> list[SegmentCapture]:
    bpf = lab_filter(plan)
    return [SegmentCapture(seg.name, seg.family, seg.bridge, f"captures/{seg.name}.pcap", bpf)
            for seg in sorted(plan.segments.values(), key=lambda s: s.name)]


def sidecar_script(captures: list[SegmentCapture]) -> str:
    """The sidecar's shell script: a tcpdump per segment; ready once all listen; ends when they do.

    ``-U`` writes each packet as it arrives, so a capture read while the lab
    runs is whole up to its last packet. The sidecar is stopped with SIGTERM
    to every tcpdump (each closes its file), after which the script exits and
    the files are copied out of the stopped container.
    """
    lines = ["set -u", f"mkdir -p {CAPTURE_DIR}", "pids="]
    for cap in captures:
        lines.append(
            f"tcpdump -i {shlex.quote(cap.bridge)} {IMMEDIATE} -n -U -s {SNAPLEN} -w {shlex.quote(cap.sidecar_path)} "
            f"{shlex.quote(cap.bpf)} 2>{shlex.quote(cap.sidecar_err)} & pids=\"$pids $!\""
        )
    errs = " ".join(shlex.quote(c.sidecar_err) for c in captures)
    count = len(captures)
    # Ready when every tcpdump said "listening on"; failed when one exited first (its words are in its .err).
    lines += [
        "i=0",
        "while :; do",
        f"  n=$(grep -l 'listening on' {errs} 2>/dev/null | wc -l)",
        f"  [ \"$n\" -ge {count} ] && break",
        "  for pid in $pids; do",
        "    if ! kill -0 \"$pid\" 2>/dev/null || [ $i -ge 300 ]; then",
        f"      echo '{FAILED_PREFIX}:'; cat {errs}; kill $pids 2>/dev/null; exit 1",
        "    fi",
        "  done",
        "  i=$((i+1)); sleep 0.1",
        "done",
        f"echo '{READY_LINE}'",
        "wait",
        "echo 'testbed: capture stopped'",
        f"cat {errs}",
    ]
    return "\n".join(lines) + "\n"


#: Run in the sidecar to stop it: each tcpdump closes its file and reports its counts, then the script ends.
STOP_COMMAND = "pkill -TERM -x tcpdump"


@dataclass(frozen=True)
class CaptureFile:
    """One segment's capture in the run directory, with tcpdump's own counts."""

    segment: str
    family: str
    file: str  # relative to the run directory
    bytes: int
    captured: int | None = None  # "N packets captured"
    dropped: int | None = None  # "N packets dropped by kernel": the capture missed these

    def to_dict(self) -> dict[str, object]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


_COUNT = {"captured": "packets captured", "dropped": "packets dropped by kernel"}


def tcpdump_counts(stderr: str) -> dict[str, int]:
    """tcpdump's closing counts ("12 packets captured", "0 packets dropped by kernel")."""
    out: dict[str, int] = {}
    for line in stderr.splitlines():
        number, _, rest = line.strip().partition(" ")
        for key, words in _COUNT.items():
            if rest == words and number.isdigit():
                out[key] = int(number)
    return out


# --- `testbed capture`: one segment of a live lab, streamed to the user -----------------------

#: The label kind of a `testbed capture` sidecar; `testbed down` removes a leftover one by the run's label.
LIVE_KIND = "capture-live"


def live_filter(plan: LabPlan, extra: str | None = None) -> str:
    """The lab filter, ANDed with the user's own BPF expression: a capture never holds traffic from outside the lab."""
    lab = lab_filter(plan)
    extra = (extra or "").strip()
    return f"({lab}) and ({extra})" if extra else lab


def live_command(bridge: str, bpf: str, count: int | None = None, pcap: bool = False) -> list[str]:
    """tcpdump's argv for `testbed capture`: text lines or pcap bytes on its standard output.

    Text: ``-n -l`` (numeric, one line as soon as its packet arrives). Pcap:
    ``-w - -U``, each packet written whole as it arrives, so a reader at the
    other end of a pipe (``tshark -r -``) sees it at once. "listening on ..."
    and the closing counts go to standard error, which the fabric keeps apart
    from the pcap bytes.
    """
    argv = ["tcpdump", "-i", bridge, IMMEDIATE, "-n", "-s", str(SNAPLEN)]
    argv += ["-U", "-w", "-"] if pcap else ["-l"]
    if count is not None:
        argv += ["-c", str(count)]
    return [*argv, bpf]
