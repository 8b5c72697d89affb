"""The HTML report of a run directory (and of a matrix): one self-contained file, readable offline.

Built from the run directory alone (result.json, plan.json, timeline.jsonl,
the files beside them), so `testbed report RUN_DIR` re-renders it long after
the lab is gone, on another machine. The page has inline CSS, the topology
drawn by graphviz as inline SVG (``graph.py``), no JavaScript and no external
URL; its links are relative paths into the run directory (logs, configs,
client traces, result.json), so it works when the directory is moved,
bundled or served as files.

The terminal panel (``report.py``) stays as it is; this is an addition.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from . import graph
from .bundle import BundleError, load_result
from .report import STATE_WORDS, tidy
from .resultschema import version_problem

#: At most this many timeline rows in the page; the rest is in timeline.jsonl (the page says so).
TIMELINE_LIMIT = 400
REPORT_NAME = "report.html"
MATRIX_REPORT_NAME = "matrix.html"

_OUTCOME_MARK = {"delivered": "✓", "relayed": "→", "deferred": "⏸", "queued": "⏸", "bounced": "✗", "expired": "✗",
                 "frozen": "❄", "discarded": "✗", "received": "?"}


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("testbed", "templates/report"),
        undefined=jinja2.Undefined,  # old run directories lack newer keys: shown as empty, not an error
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["family"] = lambda f: {"ipv4": "IPv4", "ipv6": "IPv6"}.get(str(f or ""), "?")
    return env


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _timeline(run_dir: Path) -> tuple[list[dict[str, Any]], bool]:
    """(every entry of timeline.jsonl, whether the file exists)."""
    path = run_dir / "timeline.jsonl"
    if not path.is_file():
        return [], False
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line) if line.strip() else None
        except ValueError:
            continue
        if isinstance(entry, dict):
            rows.append(entry)
    return rows, True


def _evidence(hist: Mapping[str, Any], limit: int = 12) -> list[str]:
    out: list[str] = []
    for h in [hist, *(hist.get("dsns") or [])]:
        for hop in h.get("hops") or []:
            for line in hop.get("evidence") or []:
                if line not in out:
                    out.append(line)
    return [tidy(x) for x in out[-limit:]]


def _hops(hist: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for n, hop in enumerate(hist.get("hops") or [], 1):
        out.append({
            "n": n, "host": hop.get("host"), "next_host": hop.get("next_host"), "outcome": hop.get("outcome"),
            "mark": _OUTCOME_MARK.get(hop.get("outcome"), "?"), "family": hop.get("family"),
            "address": hop.get("address"), "queue_id": hop.get("queue_id"),
            "reason": hop.get("reason") if hop.get("outcome") != "delivered" else "",
        })
    return out


#: At most this many timeline entries in each message's own box.
MESSAGE_TIMELINE_LIMIT = 60


def _messages(messages: Mapping[str, Any], timeline: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for name, hist in messages.items():
        own = [t for t in timeline if t.get("message") == name or str(t.get("message") or "").startswith(name + " ")]
        out.append({
            "name": name, "recipients": ", ".join(hist.get("recipients") or []), "state": hist.get("state"),
            "state_words": STATE_WORDS.get(hist.get("state"), hist.get("state")),
            "hops": _hops(hist),
            "bounces": [{"at": (d.get("hops") or [{}])[0].get("host", "?"),
                         "reached": d.get("state") == "delivered", "hops": _hops(d)} for d in hist.get("dsns") or []],
            "evidence": _evidence(hist) if hist.get("state") != "delivered" else [],
            "timeline": own[:MESSAGE_TIMELINE_LIMIT], "timeline_total": len(own),
        })
    return out


def _message_of(spec: Mapping[str, Any]) -> str | None:
    """The message an expectation is about (message:, dsn: for, mailbox: dsn_for)."""
    if spec.get("message"):
        return str(spec["message"])
    for key, inner in (("dsn", "for"), ("mailbox", "dsn_for")):
        value = spec.get(key)
        if isinstance(value, dict) and value.get(inner):
            return str(value[inner])
    return None


def _expectations(result: Mapping[str, Any], plan: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    specs = ((plan or {}).get("topology") or {}).get("expect") or []
    messages = result.get("messages") or {}
    out = []
    for c in result.get("expectations") or []:
        index = c.get("index")
        spec = specs[index] if isinstance(index, int) and 0 <= index < len(specs) else {}
        message = _message_of(spec) if isinstance(spec, dict) else None
        histogram = c.get("histogram") or {}
        total = sum(histogram.values()) or 1
        out.append({
            "status": c.get("status"), "mark": {"pass": "✓", "fail": "✗", "n/a": "–"}.get(c.get("status"), "?"),
            "description": c.get("description") or c.get("kind"), "kind": c.get("kind"), "detail": c.get("detail"),
            "message": message,
            "evidence": _evidence(messages[message]) if message in messages else [],
            "histogram": [{"name": k, "n": v, "pct": round(100 * v / total)} for k, v in histogram.items()],
        })
    return out


def _counter_text(counter: Counter[str]) -> str:
    return ", ".join(f"{k} ×{n}" for k, n in counter.most_common()) or "-"


def _clients(clients: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per client step; a repeated step (run N of STEP) as one row with histograms."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for c in clients.values():
        key = c.get("step") or c.get("id") if c.get("run") is not None else c.get("id")
        groups.setdefault(str(key), []).append(c)
    out = []
    for step, runs in groups.items():
        first = runs[0]
        resolver = (first.get("resolver") or {}).get("name", "")
        who = first.get("version") or first.get("software")
        if first.get("model"):
            who = f"{first.get('software')} (MODEL of {(first['model'] or {}).get('of')})"
        firsts = Counter(
            f"{r['resolved'][0]} ({_host_of(r, r['resolved'][0])})" if r.get("resolved")
            else (r.get("resolver_error") or "nothing") for r in runs)
        received = Counter(((r.get("connected") or {}).get("received_by") or "not in a server's log")
                           for r in runs if r.get("connected"))
        sources = Counter((r.get("connected") or {}).get("source") for r in runs
                          if r.get("connected") and (r.get("connected") or {}).get("source"))
        total = sum(received.values()) or 1
        out.append({
            "step": step, "host": first.get("host"), "who": who, "resolver": resolver,
            "action": first.get("action"), "protocol": first.get("protocol"), "server": first.get("server"),
            "runs": len(runs), "ok": sum(1 for r in runs if r.get("ok")),
            "first": _counter_text(firsts), "sources": _counter_text(sources),
            "received": [{"name": k, "n": n, "pct": round(100 * n / total)} for k, n in received.most_common()],
            "total_ms": first.get("total_ms") if len(runs) == 1 else None,
            "reply": first.get("reply") if len(runs) == 1 else None,
            "file": f"clients/{first.get('id')}.json",
        })
    return out


def _host_of(client: Mapping[str, Any], address: str) -> str:
    for a in client.get("attempts") or []:
        if a.get("address") == address and a.get("host"):
            return str(a["host"])
    return "?"


def _files(run_dir: Path) -> list[dict[str, Any]]:
    """Links into the run directory, relative to report.html, grouped as a reader needs them."""
    groups = [
        ("the verdict and the plan", ["result.json", "plan.json", "timeline.jsonl", "events.jsonl",
                                      "connections.jsonl", "dns-queries.jsonl", "mailboxes.json"]),
        ("MTA and container logs", sorted(str(p.relative_to(run_dir)) for p in (run_dir / "logs").rglob("*")
                                          if p.is_file())),
        ("packet captures", sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.pcap*") if p.is_file())
         + ["captures/connections.jsonl"]),
        ("client steps", sorted(str(p.relative_to(run_dir)) for p in (run_dir / "clients").glob("*") if p.is_file())),
        ("submissions and queues", sorted(str(p.relative_to(run_dir)) for d in ("sends", "queues")
                                          for p in (run_dir / d).glob("*") if p.is_file())),
        ("rendered configuration", sorted(str(p.relative_to(run_dir)) for p in (run_dir / "config").rglob("*")
                                          if p.is_file())),
    ]
    out = []
    for title, paths in groups:
        present = [p for p in paths if (run_dir / p).is_file()]
        if present:
            out.append({"title": title, "paths": [p.replace(os.sep, "/") for p in present]})
    return out


def build_context(run_dir: Path, timeline_limit: int = TIMELINE_LIMIT) -> dict[str, Any]:
    """Everything the page shows, from the run directory alone."""
    result = load_result(run_dir)
    plan = _read_json(run_dir / "plan.json")
    plan = plan if isinstance(plan, dict) else None
    messages = result.get("messages") or {}
    drawing, drawing_note, dot = "", "", ""
    if plan is None:
        drawing_note = "no plan.json in the run directory: the topology cannot be drawn"
    else:
        dot = graph.dot_source(plan, messages)
        try:
            drawing = graph.svg_inline(dot)
        except graph.GraphError as exc:
            if graph.dot_missing():
                drawing_note = f"the topology is not drawn: {exc}"
            else:  # dot trips over some layouts with the message arrows: draw the lab without them
                dot = graph.dot_source(plan)
                try:
                    drawing = graph.svg_inline(dot)
                    drawing_note = "the messages' arrows are left out of the drawing (graphviz could not lay them out)"
                except graph.GraphError as again:
                    drawing_note = f"the topology is not drawn: {again}"
    checks = result.get("expectations") or []
    passed = sum(1 for c in checks if c.get("status") == "pass")
    applied = sum(1 for c in checks if c.get("status") != "n/a")
    if result.get("error"):
        verdict, verdict_class = "lab error, not judged", "error"
    elif result.get("passed"):
        verdict, verdict_class = f"as expected ({passed}/{applied} expectations hold)", "pass"
    else:
        verdict, verdict_class = f"NOT as expected ({passed}/{applied} expectations hold)", "fail"
    entries, have_timeline = _timeline(run_dir)
    steps = result.get("steps") or []
    times = [float(s["started_at"]) for s in steps if s.get("started_at")]
    times += [float(r["t"]) for r in entries if isinstance(r.get("t"), int | float)]
    t0 = min(times, default=0.0)
    for r in entries:
        r["rel"] = f"{float(r['t']) - t0:+.3f}" if isinstance(r.get("t"), int | float) else ""
    rows, total = entries[:timeline_limit], len(entries)
    timings = result.get("timings_s") or {}
    return {
        "name": run_dir.resolve().name,
        "label": f"{result.get('topology')}/{result.get('variant')}",
        "result": result,
        "software": sorted(set((result.get("software") or {}).values())),
        "versions": sorted((result.get("versions") or {}).items()),
        "total_s": round(sum(timings.values()), 1),
        "timings": timings,
        "verdict": verdict,
        "verdict_class": verdict_class,
        "drawing": drawing,
        "drawing_note": drawing_note,
        "dot": dot,
        "messages": _messages(messages, entries),
        "clients": _clients(result.get("clients") or {}),
        "expectations": _expectations(result, plan),
        "steps": steps,
        "timeline": rows,
        "timeline_total": total,
        "timeline_present": have_timeline,
        "timeline_limit": timeline_limit,
        "files": _files(run_dir),
        "description": " ".join(str((plan or {}).get("topology", {}).get("description") or "").split()),
    }


def render_html(run_dir: Path, timeline_limit: int = TIMELINE_LIMIT) -> tuple[str, list[str]]:
    """(the page, warnings: what it could not show, e.g. the drawing without graphviz)."""
    ctx = build_context(run_dir, timeline_limit)
    warnings = [ctx["drawing_note"]] if ctx["drawing_note"] else []
    from markupsafe import Markup

    ctx["drawing"] = Markup(ctx["drawing"])  # graphviz's own SVG: escaped by dot, inlined as it is
    return _environment().get_template("run.html.j2").render(**ctx), warnings


def _write(target: Path, page: str) -> Path:
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise BundleError(f"cannot write {target}: {exc.strerror or exc}") from None
    return target


def write_report(run_dir: Path, timeline_limit: int = TIMELINE_LIMIT) -> tuple[Path, list[str]]:
    """RUN_DIR/report.html, re-rendered from the run directory; (its path, warnings)."""
    page, warnings = render_html(run_dir, timeline_limit)
    return _write(run_dir / REPORT_NAME, page), warnings


# --- the matrix -----------------------------------------------------------------------


def _cell_dir(matrix_dir: Path, run_dir: str) -> Path | None:
    """A cell's run directory: under the matrix directory's runs/ (where the matrix puts it), or as recorded."""
    name = Path(run_dir).name
    for candidate in (matrix_dir / "runs" / name, Path(run_dir), matrix_dir / run_dir):
        if (candidate / "result.json").is_file():
            return candidate
    return None


def render_matrix_html(matrix_dir: Path, cell_reports: bool = True) -> tuple[str, list[str]]:
    """The matrix's page from matrix.json; with ``cell_reports``, each cell's report.html is (re-)written too."""
    data = _read_json(matrix_dir / "matrix.json")
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise BundleError(f"{matrix_dir / 'matrix.json'}: not a testbed matrix (expected an object with rows)")
    problem = version_problem(data, str(matrix_dir / "matrix.json"))
    if problem:
        raise BundleError(problem)
    warnings: list[str] = []
    rows = []
    for row in data["rows"]:
        cell = _cell_dir(matrix_dir, str(row.get("run_dir") or ""))
        link = None
        if cell is not None:
            if cell_reports:
                try:
                    _, w = write_report(cell)
                    warnings += [f"{cell.name}: {x}" for x in w]
                except BundleError as exc:
                    warnings.append(str(exc))
            if (cell / REPORT_NAME).is_file():
                link = os.path.relpath(cell / REPORT_NAME, matrix_dir).replace(os.sep, "/")
        else:
            warnings.append(f"no run directory for {row.get('scenario')}/{row.get('variant')} "
                            f"{row.get('assignment')}: {row.get('run_dir')}")
        rows.append({**row, "link": link})
    ok = sum(1 for r in rows if r.get("as_expected"))
    page = _environment().get_template("matrix.html.j2").render(
        name=matrix_dir.resolve().name, rows=rows, ok=ok, total=len(rows), elapsed_s=data.get("elapsed_s"),
        has_md=(matrix_dir / "matrix.md").is_file())
    return page, sorted(set(warnings), key=warnings.index)


def write_matrix_report(matrix_dir: Path, cell_reports: bool = True) -> tuple[Path, list[str]]:
    page, warnings = render_matrix_html(matrix_dir, cell_reports)
    return _write(matrix_dir / MATRIX_REPORT_NAME, page), warnings
