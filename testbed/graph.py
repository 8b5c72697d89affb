"""A lab drawn with graphviz: segments coloured by family, hosts, routers, MX preferences, message paths.

Pure where it can be: ``dot_source`` turns a plan (as ``plan.json`` holds it,
``planstore.plan_to_dict``) into graphviz dot source without any binary; only
``render`` needs graphviz's ``dot`` (Debian's graphviz package) to turn it
into SVG or PNG.

The drawing: each segment is a box coloured by its family (IPv4 only, IPv6
only, dual stack: the legend says which) holding its hosts and a bar with its
subnets; routers (and any host on several segments) stand outside and are
joined to each of their segments; each mail domain is a note with an edge to
each of its MX hosts, labelled with the preference; a name the DNS serves for
several hosts (``dns.names``) points at them. Given the messages of a run,
each relayed hop is drawn as a bold arrow between the two hosts with the
message, the hop's number and its family.
"""

from __future__ import annotations

import html
import shutil
import subprocess
from collections.abc import Mapping
from typing import Any

import graphviz

from .errors import TestbedError

#: family -> (line colour, fill colour, legend text)
FAMILY_COLOURS: dict[str, tuple[str, str, str]] = {
    "ipv4": ("#c0392b", "#fdecea", "IPv4 only"),
    "ipv6": ("#1f63b4", "#e8f0fb", "IPv6 only"),
    "dual": ("#1e8449", "#e9f7ef", "dual stack"),
}
_UNKNOWN = ("#555555", "#f4f4f4", "?")
#: message hop outcome -> arrow colour
_MESSAGE_COLOURS = ("#8e44ad", "#d35400", "#16a085", "#2c3e50", "#b7950b", "#7f8c8d")
FORMATS = ("svg", "png", "dot")


class GraphError(TestbedError):
    """The drawing cannot be made (graphviz's dot is missing or failed)."""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _family(value: str | None) -> tuple[str, str, str]:
    return FAMILY_COLOURS.get(value or "", _UNKNOWN)


def _node_id(kind: str, name: str) -> str:
    return f"{kind}__{name}"


def _segment_subnets(seg: Mapping[str, Any]) -> list[str]:
    """The subnets a segment really has (an IPv6-only segment's placeholder IPv4 subnet is left out)."""
    out = []
    if seg.get("subnet_v4") and not seg.get("placeholder_v4") and seg.get("family") != "ipv6":
        out.append(str(seg["subnet_v4"]))
    if seg.get("subnet_v6") and seg.get("family") != "ipv4":
        out.append(str(seg["subnet_v6"]))
    return out


def _addresses(host: Mapping[str, Any], segment: str | None = None) -> list[str]:
    out = []
    for itf in host.get("interfaces") or []:
        if segment is not None and itf.get("segment") != segment:
            continue
        for key in ("ipv4", "ipv6"):
            if itf.get(key):
                out.append(str(itf[key]))
        out += [str(x) for x in itf.get("extra") or []]
    return out


def _host_label(host: Mapping[str, Any], with_addresses: bool) -> str:
    line, fill, stack_text = _family(host.get("stack"))
    software = host.get("software") or ""
    rows = [f'<TR><TD ALIGN="LEFT"><B>{_e(host.get("name"))}</B></TD></TR>',
            f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10">{_e(host.get("kind"))} · {_e(software)}</FONT></TD></TR>',
            f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="10" COLOR="{line}">stack: {_e(stack_text)}</FONT></TD></TR>']
    if host.get("fqdn"):
        rows.append(f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="9">{_e(host["fqdn"])}</FONT></TD></TR>')
    if with_addresses:
        for addr in _addresses(host):
            rows.append(f'<TR><TD ALIGN="LEFT"><FONT POINT-SIZE="9" FACE="monospace">{_e(addr)}</FONT></TD></TR>')
    return '<<TABLE BORDER="0" CELLBORDER="0" CELLSPACING="0" CELLPADDING="1">' + "".join(rows) + "</TABLE>>"


def _hop_family(hop: Mapping[str, Any]) -> str:
    return {"ipv4": "IPv4", "ipv6": "IPv6"}.get(str(hop.get("family") or ""), "?")


def dot_source(plan: Mapping[str, Any], messages: Mapping[str, Any] | None = None, title: str | None = None) -> str:
    """A plan (plan.json's content) and, optionally, result.json's messages -> graphviz dot source."""
    segments: Mapping[str, Any] = plan.get("segments") or {}
    hosts: Mapping[str, Any] = plan.get("hosts") or {}
    topology: Mapping[str, Any] = plan.get("topology") or {}
    g = graphviz.Digraph("lab", graph_attr={
        "rankdir": "LR", "fontname": "DejaVu Sans", "fontsize": "12", "nodesep": "0.25", "ranksep": "0.6",
        "compound": "true", "newrank": "true", "labelloc": "t",
        **({"label": title} if title else {}),
    }, node_attr={"fontname": "DejaVu Sans", "fontsize": "11"}, edge_attr={"fontname": "DejaVu Sans", "fontsize": "10"})

    segs_of = {name: [i.get("segment") for i in h.get("interfaces") or []] for name, h in hosts.items()}
    outside = {name for name, h in hosts.items() if h.get("kind") == "router" or len(set(segs_of[name])) != 1}

    for seg_name, seg in segments.items():
        line, fill, text = _family(seg.get("family"))
        with g.subgraph(name=f"cluster_{seg_name}") as c:
            c.attr(label=f"segment {seg_name} ({text})", color=line, fillcolor=fill, style="filled,rounded",
                   penwidth="2", fontcolor=line)
            subnets = "\\n".join(_segment_subnets(seg)) or "no subnet"
            c.node(_node_id("segment", seg_name), f"{seg_name}\\n{subnets}", shape="box", style="filled",
                   fillcolor=line, fontcolor="white", fontsize="10", height="0.3")
            for name, host in hosts.items():
                if name in outside or segs_of[name][:1] != [seg_name]:
                    continue
                hline, _, _ = _family(host.get("stack"))
                c.node(_node_id("host", name), _host_label(host, True), shape="box", style="rounded,filled",
                       fillcolor="white", color=hline, penwidth="2", tooltip=str(host.get("fqdn") or name))
                c.edge(_node_id("segment", seg_name), _node_id("host", name), color=line, arrowhead="none",
                       style="dotted")

    for name in sorted(outside):
        host = hosts[name]
        hline, _, _ = _family(host.get("stack"))
        g.node(_node_id("host", name), _host_label(host, False), shape="box" if host.get("kind") != "router" else "octagon",
               style="filled", fillcolor="#fffbe6" if host.get("kind") == "router" else "white", color=hline,
               penwidth="2")
        for itf in host.get("interfaces") or []:
            seg = segments.get(itf.get("segment"), {})
            line, _, _ = _family(seg.get("family"))
            addrs = [a for a in (itf.get("ipv4"), itf.get("ipv6")) if a] + list(itf.get("extra") or [])
            g.edge(_node_id("host", name), _node_id("segment", itf.get("segment")), color=line, penwidth="2",
                   arrowhead="none", label="\\n".join(map(str, addrs)), fontcolor=line, fontsize="9")

    # Mail domains and their MX hosts, with the preference.
    for domain, spec in (topology.get("domains") or {}).items():
        mx = (spec or {}).get("mx") or {}
        if not mx:
            continue
        g.node(_node_id("domain", domain), f"{domain}\\n(MX)", shape="note", style="filled", fillcolor="#fff7d6",
               color="#9a7d0a")
        for mx_host, pref in sorted(mx.items(), key=lambda kv: (kv[1], kv[0])):
            if mx_host in hosts:
                g.edge(_node_id("domain", domain), _node_id("host", mx_host), label=f"MX {pref}", color="#9a7d0a",
                       fontcolor="#7d6608", style="dashed", constraint="false")
    # Names the DNS serves for several hosts (round robin).
    for dns_name, targets in ((topology.get("dns") or {}).get("names") or {}).items():
        g.node(_node_id("name", dns_name), f"{dns_name}\\n(A/AAAA)", shape="note", style="filled",
               fillcolor="#f2f3f4", color="#5d6d7e")
        for target in targets or []:
            if target in hosts:
                g.edge(_node_id("name", dns_name), _node_id("host", target), color="#5d6d7e", style="dashed",
                       constraint="false")

    # Each message's relayed hops over the drawing: one arrow per (from, to, family), naming its messages.
    hops: dict[tuple[str, str, str], list[str]] = {}
    colour_of: dict[tuple[str, str, str], str] = {}
    for i, (msg_name, msg) in enumerate((messages or {}).items()):
        for hist in [msg, *(msg.get("dsns") or [])]:
            for n, hop in enumerate(hist.get("hops") or [], 1):
                nxt = hop.get("next_host")
                if hop.get("outcome") == "relayed" and hop.get("host") in hosts and nxt in hosts:
                    key = (hop["host"], nxt, _hop_family(hop))
                    hops.setdefault(key, []).append(f"{hist.get('name') or msg_name} #{n}")
                    colour_of.setdefault(key, _MESSAGE_COLOURS[i % len(_MESSAGE_COLOURS)])
    for (src, dst, family), names in hops.items():
        shown = names if len(names) <= 3 else names[:2] + [f"+{len(names) - 2} more"]
        colour = colour_of[(src, dst, family)]
        g.edge(_node_id("host", src), _node_id("host", dst), label=f"{', '.join(shown)} {family}", color=colour,
               fontcolor=colour, penwidth="2.5")

    with g.subgraph(name="cluster_legend") as legend:
        legend.attr(label="legend", color="#999999", style="rounded", fontcolor="#555555")
        for family, (line, fill, text) in FAMILY_COLOURS.items():
            legend.node(_node_id("legend", family), text, shape="box", style="filled,rounded", fillcolor=fill,
                        color=line, fontcolor=line, penwidth="2")
    return g.source


def dot_missing() -> str | None:
    """None where graphviz's dot can be run, else why not (naming the Debian package)."""
    if shutil.which("dot") is None:
        return "graphviz's `dot` is not installed: apt-get install graphviz (Debian's graphviz package)"
    return None


def render(source: str, fmt: str = "svg", timeout: float = 60) -> bytes:
    """dot source -> SVG or PNG bytes ('dot': the source itself), through graphviz's dot."""
    if fmt not in FORMATS:
        raise GraphError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
    if fmt == "dot":
        return source.encode()
    missing = dot_missing()
    if missing:
        raise GraphError(missing)
    try:
        done = subprocess.run(["dot", f"-T{fmt}"], input=source.encode(), capture_output=True, timeout=timeout,
                              check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphError(f"graphviz's dot failed: {exc}") from None
    if done.returncode != 0:
        raise GraphError(f"graphviz's dot failed (exit {done.returncode}): {done.stderr.decode(errors='replace')[:400]}")
    return done.stdout


def svg_inline(source: str) -> str:
    """The SVG to put inside an HTML page: without the XML prolog and DOCTYPE."""
    svg = render(source, "svg").decode("utf-8", errors="replace")
    start = svg.find("<svg")
    return svg[start:] if start >= 0 else svg
