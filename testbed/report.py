"""Verdicts for people: the path each message took, where it stopped, and why."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich import box
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .clientrun import ClientResult
from .results import RunResult
from .track import History

_OUTCOME_STYLE = {
    "delivered": ("✓", "green"),
    "relayed": ("→", "cyan"),
    "deferred": ("⏸", "yellow"),
    "queued": ("⏸", "yellow"),
    "bounced": ("✗", "red"),
    "expired": ("✗", "red"),
    "frozen": ("❄", "blue"),
    "discarded": ("✗", "red"),
    "received": ("?", "magenta"),
}
_STATE_STYLE = {
    "delivered": "bold green",
    "returned": "bold yellow",
    "queued": "bold yellow",
    "bounce-queued": "bold yellow",
    "lost": "bold red",
}
#: What a message's state means, in words (the HTML report says it the same way).
STATE_WORDS = {
    "delivered": "delivered",
    "returned": "not delivered; the bounce reached the sender",
    "queued": "still queued",
    "bounce-queued": "not delivered; the bounce is stuck in a queue",
    "lost": "lost: not delivered and the sender was never told",
}


def _short(text: str | None, limit: int = 110) -> str:
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def path_line(hist: History) -> Text:
    line = Text("   ")
    for i, hop in enumerate(hist.hops):
        line.append(hop.host, style="bold")
        if hop.outcome == "relayed" and i + 1 < len(hist.hops):
            fam = {"ipv4": "IPv4", "ipv6": "IPv6"}.get(hop.family or "", "?")
            line.append(f" ─{fam}→ ", style="cyan")
            continue
        symbol, style = _OUTCOME_STYLE.get(hop.outcome, ("?", "magenta"))
        line.append(f" {symbol} {hop.outcome}", style=style)
        if hop.outcome not in ("delivered",) and hop.reason:
            line.append(f" ({_short(hop.reason, 90)})", style="dim")
        if i + 1 < len(hist.hops):
            line.append("  ⋯  ")
    if not hist.hops:
        line.append("never accepted by any MTA", style="red")
    return line


def history_block(hist: History, indent: str = "") -> list[Text]:
    rcpts = ", ".join(hist.recipients)
    head = Text(f"{indent}{hist.name} → {rcpts}  ")
    head.append(STATE_WORDS.get(hist.state, hist.state), style=_STATE_STYLE.get(hist.state, ""))
    lines = [head, Text(indent) + path_line(hist)]
    for dsn in hist.dsns:
        where = dsn.hops[0].host if dsn.hops else "?"
        sub = Text(f"{indent}   bounce generated at {where}: ")
        sub.append("delivered to the sender" if dsn.delivered else "never reached the sender",
                   style="green" if dsn.delivered else "red")
        lines.append(sub)
        lines.append(Text(indent + "   ") + path_line(dsn))
    return lines


_SYSLOG = re.compile(r"^(?:\w{3} +\d+ )?(?P<time>\d\d:\d\d:\d\d)(?:\.\d+)? \S+ (?P<prog>[\w./-]+?)(?:\[\d+\])?: (?P<msg>.*)$")


def tidy(line: str) -> str:
    """'mx20: Nov 29 07:18:52 mx20 postfix/smtp[364]: …' -> 'mx20 07:18:52 postfix/smtp: …'."""
    host, sep, rest = line.partition(": ")
    m = _SYSLOG.match(rest) if sep else None
    return f"{host} {m['time']} {m['prog']}: {m['msg']}" if m else line


def result_panel(result: RunResult) -> Panel:
    plan = result.plan
    software = sorted({h.software for h in plan.hosts.values() if h.kind == "mta"})
    parts: list = []
    study = f"  ({plan.study})" if plan.study else ""
    meta = Text(f"{plan.title}{study}\n" if plan.title else "", style="italic")
    meta.append(f"{', '.join(software)} on {plan.suite} · run {plan.run_id}")
    if result.timings:
        meta.append(f" · {sum(result.timings.values()):.1f} s")
    parts.append(meta)
    if plan.variant_description:
        parts.append(Text(" ".join(plan.variant_description.split()), style="dim"))
    if result.error:
        parts.append(Text(f"ERROR: {result.error}", style="bold red"))
    for hist in result.histories.values():
        parts.append(Text(""))
        parts.extend(history_block(hist))
        evidence = hist.decisive_lines()
        if evidence and hist.state != "delivered":
            parts.append(Text("   decisive log lines:", style="dim"))
            parts.extend(Text("     " + tidy(e), style="dim") for e in evidence)
    if result.clients:
        parts.append(Text(""))
        parts.extend(client_blocks(list(result.clients.values())))
    if result.checks:
        parts.append(Text(""))
        for c in result.checks:
            mark, style = {"pass": ("✓", "green"), "fail": ("✗", "bold red"), "n/a": ("–", "dim")}[c.status]
            t = Text(f" {mark} ", style=style)
            t.append(c.description or c.kind)
            if c.status != "pass" or c.kind != "message":
                t.append(f"  [{_short(c.detail, 140)}]", style="dim" if c.status != "fail" else "red")
            parts.append(t)
            parts.extend(histogram_lines(c.histogram))
    parts.append(Text(f"\nrun directory: {result.run_dir.path}" + ("  (lab kept running)" if result.kept else ""),
                      style="dim"))
    passed = sum(1 for c in result.checks if c.status == "pass")
    total = sum(1 for c in result.checks if c.status != "n/a")
    if result.passed:
        title = f"[bold green]{escape(result.label)}: as expected ({passed}/{total} expectations hold)[/]"
    elif result.error:
        title = f"[bold red]{escape(result.label)}: lab error, not judged[/]"
    else:
        title = f"[bold red]{escape(result.label)}: NOT as expected ({passed}/{total} expectations hold)[/]"
    return Panel(Group(*parts), title=title, title_align="left", border_style="green" if result.passed else "red")


def _who(r: ClientResult) -> str:
    """"curl 8.14.1" or "outlook-model (MODEL of Outlook 2007/2010 ...)", plus the resolver."""
    version = r.version if r.version.lower().startswith(r.software) else f"{r.software} {r.version}".strip()
    who = version if not r.model_of else f"{r.software} (MODEL of {r.model_of})"
    if r.resolver_model_of:
        who += f" with the {r.resolver} resolver (MODEL of {r.resolver_model_of})"
    elif r.resolver != "glibc":
        who += f" with the {r.resolver} resolver"
    return who


def _attempt_text(r: ClientResult) -> str:
    if not r.attempts:
        return "no connection attempt"
    t0 = r.trace.started

    def one(a: Any) -> str:
        start, end = (a.started - t0) * 1000, (a.ended - t0) * 1000
        if end - start < 1:
            return f"{a.address} {a.result} at {start:.0f} ms"
        return f"{a.address} {a.result} ({start:.0f} -> {end:.0f} ms)"

    return ", ".join(one(a) for a in r.attempts)


def _repeat_block(runs: list[ClientResult]) -> list[Any]:
    """A repeated step in a few lines: which address came first, where the connections went."""
    r = runs[0]
    head = Text(f" {r.step}: ", style="bold")
    head.append(f"{_who(r)} on {r.host}, {r.action} over {r.protocol} to {r.server}, {len(runs)} runs")
    head.append(f" ({r.resolver})", style="dim")
    firsts = Counter(f"{x.resolved[0]} ({x.hosts_by_address.get(x.resolved[0], '?')})" if x.resolved
                     else (x.resolver_error or "nothing") for x in runs)
    sources = Counter(x.connected.source for x in runs if x.connected and x.connected.source)
    received = Counter(x.received_by_connected or "not in a server's log" for x in runs if x.connected)
    ok = sum(x.outcome.ok for x in runs)
    out = [head,
           Text("   first address: " + ", ".join(f"{a} ×{n}" for a, n in firsts.most_common())),
           Text("   from:          " + (", ".join(f"{a} ×{n}" for a, n in sources.most_common()) or "-")),
           Text("   received by:   " + (", ".join(f"{h} ×{n}" for h, n in received.most_common()) or "nobody")
                + f"  (the servers' logs) · ok {ok}/{len(runs)}")]
    return out


def histogram_lines(histogram: dict[str, int], width: int = 30) -> list[Text]:
    """A distribution's counts as bars, one line per server."""
    total = sum(histogram.values()) or 1
    name_width = max(map(len, histogram), default=0)
    out = []
    for name, n in histogram.items():
        line = Text(f"     {name:<{name_width}} ")
        line.append("█" * round(width * n / total) or ("▏" if n else ""), style="cyan")
        line.append(f" {n} ({100 * n / total:.0f}%)", style="dim")
        out.append(line)
    return out


def client_blocks(clients: list[ClientResult]) -> list[Any]:
    """Per client: what it resolved, what it tried, what it got, how long it took; a sweep as a table."""
    swept = [r for r in clients if r.labels and r.run is None]
    repeated: dict[str, list[ClientResult]] = {}
    for r in clients:
        if r.run is not None:
            repeated.setdefault(r.step, []).append(r)
    out: list[Any] = []
    shown: set[str] = set()
    for r in clients:
        if r.run is not None:
            if r.step not in shown:
                shown.add(r.step)
                out.extend(_repeat_block(repeated[r.step]))
            continue
        if r in swept:
            continue
        got = r.connected
        head = Text(f" {r.id}: ", style="bold")
        head.append(f"{_who(r)} on {r.host}, {r.action} over {r.protocol} to {r.server}")
        head.append(f"  (connect timeout {r.timeout_s:g} s per attempt: timing.client_timeout, compressed)", style="dim")
        out.append(head)
        resolved = ", ".join(r.resolved) or (r.resolver_error or "nothing")
        out.append(Text(f"   resolved: {resolved}"))
        out.append(Text(f"   tried:    {_attempt_text(r)}"))
        status = Text("   got:      ")
        status.append("ok" if r.outcome.ok else "FAILED", style="green" if r.outcome.ok else "bold red")
        status.append(f" via {got.address} ({got.family})" if got else "")
        status.append(f" in {r.total_ms:.0f} ms")
        if r.outcome.reply:
            status.append(f" · {_short(r.outcome.reply, 90)}", style="dim")
        out.append(status)
    if swept:
        out.extend(sweep_table(swept))
    return out


def _short_who(r: ClientResult) -> str:
    who = r.software + (" (model)" if r.model_of else "")
    return who + (f", {r.resolver}" if r.resolver != "glibc" else ", glibc")


def sweep_table(clients: list[ClientResult]) -> list[Any]:
    """One row per client, resolver and name; one column per value of the swept variable."""
    variable = next(iter(clients[0].labels))
    values = list(dict.fromkeys(r.labels.get(variable) for r in clients))
    rows: dict[tuple[str, str], dict[Any, ClientResult]] = {}
    for r in clients:
        rows.setdefault((_short_who(r), r.server.split(".")[0]), {})[r.labels.get(variable)] = r
    table = Table(title=f"sweep over {variable}: the family used and the step's time in ms, or why it failed",
                  title_justify="left",
                  box=box.SIMPLE, padding=(0, 1))
    table.add_column("client, resolver")
    table.add_column("name")
    for v in values:
        table.add_column(str(v), justify="right")
    for (who, server), cells in rows.items():
        row: list[Any] = [who, server]
        for v in values:
            r = cells.get(v)
            if r is None:
                row.append("-")
                continue
            got = r.connected
            if got and r.outcome.ok:
                row.append(Text(f"{got.family} {r.total_ms:.0f}", style="green"))
            else:
                why = (r.resolver_error or "").removeprefix("EAI_") or ("no conn" if not got else "failed")
                row.append(Text(f"FAIL {why}", style="red"))
        table.add_row(*row)
    models = {f"{r.resolver}: MODEL of {r.resolver_model_of}" for r in clients if r.resolver_model_of}
    models |= {f"{r.software}: MODEL of {r.model_of}" for r in clients if r.model_of}
    return [table] + [Text(f" {m}", style="dim") for m in sorted(models)]


def print_results(results: Sequence[RunResult], console: Console | None = None) -> None:
    console = console or Console()
    for result in results:
        console.print(result_panel(result))
    ok = sum(r.passed for r in results)
    errors = sum(1 for r in results if r.error)
    style = "bold green" if ok == len(results) else "bold red"
    summary = f"{ok}/{len(results)} labs behaved as their topology expects"
    if errors:
        summary += f"; {errors} stopped with a lab error"
    console.print(Text(summary, style=style))
