"""report.html from a run directory alone: every section, no external URL, relative links that exist."""

from __future__ import annotations

import html
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from testbed import graph, htmlreport
from testbed.cli import main
from testbed.runner import write_html_report

RUN_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "rundir"
SECTIONS = ("summary", "verdict", "topology", "messages", "expectations", "timeline", "files")


class Page(HTMLParser):
    """What a page is made of: element ids, links, sources, text, and whether it has scripts."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.sources: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"] or "")
        for key in ("href", "xlink:href"):
            if a.get(key):
                self.links.append(a[key] or "")
        if a.get("src"):
            self.sources.append(a["src"] or "")

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def copy_run(tmp_path: Path) -> Path:
    target = tmp_path / RUN_DIR.name
    shutil.copytree(RUN_DIR, target)
    return target


def test_the_page_has_every_section_and_nothing_from_outside(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    target, warnings = htmlreport.write_report(run)
    assert target == run / "report.html" and warnings == []
    text = target.read_text()
    page = Page(text)
    assert set(SECTIONS) <= page.ids
    assert "script" not in page.tags and not page.sources  # nothing to run, nothing to fetch
    assert "url(" not in text and "@import" not in text
    assert "svg" in page.tags  # the drawing is inline
    for link in page.links:
        assert "://" not in link and not link.startswith(("/", "//")), link
        assert (run / link).is_file(), link  # every link points at a file of the run directory
    for needed in ("result.json", "plan.json", "timeline.jsonl", "logs/relay/mail.log",
                   "config/relay/etc/postfix/main.cf", "sends/m1.txt"):
        assert needed in page.links


def test_the_page_says_what_ran_and_what_came_of_it(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    text = " ".join(Page(htmlreport.render_html(run)[0]).text)
    result = json.loads((run / "result.json").read_text())
    assert "relay-bounce/fixed" in text and "as expected (5/5 expectations hold)" in text
    assert "postfix 3.7.11" in text and "Docker 20.10.24+dfsg1 (API 1.41)" in text and "bookworm" in text
    for e in result["expectations"]:
        assert e["description"] in text and e["detail"] in text
    # Each message's path, hop by hop with its family, and where the bounce went.
    assert "not delivered; the bounce reached the sender" in text and "bounce generated at" in text
    assert "delivered to the sender" in text and "IPv4" in text and "IPv6" in text
    # The decisive log lines, tidied like the terminal panel's.
    assert "relay 06:43:35 postfix/smtp: F230EBE5B4: to=<unknown_user@brainbird.nl>" in text
    # The drawing's hosts are SVG text.
    svg = htmlreport.render_html(run)[0]
    svg = html.unescape(svg[svg.index("<svg"):svg.index("</svg>")])  # dot writes "-" as &#45;
    for host in ("relay", "mx10", "mail", "router", "sk-imap", "brainbird.nl"):
        assert f">{host}<" in svg or f">{host}" in svg, host


def test_the_timeline_is_capped_with_a_note(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    text = " ".join(Page(htmlreport.render_html(run, timeline_limit=10)[0]).text)
    assert "the first 10 of 62 entries" in text
    full = " ".join(Page(htmlreport.render_html(run)[0]).text)
    assert "62 entries from" in full and "step 1: send m1" in full


def test_an_older_run_directory_still_renders(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    (run / "timeline.jsonl").unlink()
    (run / "plan.json").unlink()
    page, warnings = htmlreport.render_html(run)
    text = " ".join(Page(page).text)
    assert "has no timeline.jsonl" in text and "no plan.json" in text and warnings
    assert "as expected (5/5 expectations hold)" in text


def test_without_graphviz_the_page_is_written_and_says_why_there_is_no_drawing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(tmp_path)
    monkeypatch.setattr(graph.shutil, "which", lambda _name: None)
    _, warnings = htmlreport.write_report(run)
    assert any("apt-get install graphviz" in w for w in warnings)
    text = (run / "report.html").read_text()
    assert "apt-get install graphviz" in text and "digraph lab" in text  # the dot source is still there


def test_a_failed_expectation_and_a_lab_error_show(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    result = json.loads((run / "result.json").read_text())
    result["passed"] = False
    result["expectations"][0]["status"] = "fail"
    (run / "result.json").write_text(json.dumps(result))
    page = htmlreport.render_html(run)[0]
    assert "NOT as expected (4/5 expectations hold)" in page and 'class="status-fail"' in page
    result["error"] = "step 3 (settle) failed on relay: <queue unreadable>"
    (run / "result.json").write_text(json.dumps(result))
    page = htmlreport.render_html(run)[0]
    assert "lab error, not judged" in page and "&lt;queue unreadable&gt;" in page  # escaped, not markup


def client(step: str, run: int, first: str, host: str) -> dict:
    got = {"address": first, "family": "ipv6", "source": "2001:db8:1::10", "host": host, "received_by": host}
    return {"id": f"{step}.{run}", "step": step, "run": run, "host": "office", "software": "curl",
            "version": "curl 8.14.1", "model": None, "resolver": {"name": "glibc"}, "action": "connect",
            "protocol": "smtp", "server": "smtp.example.net", "resolved": [first], "attempts": [got],
            "connected": got, "ok": True, "reply": "220", "total_ms": 12.0}


def test_repeated_client_steps_become_one_row_with_a_histogram(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    result = json.loads((run / "result.json").read_text())
    runs = [client("office-glibc", i, "2001:db8:1::25", "mx-a") for i in range(1, 4)]
    runs.append(client("office-glibc", 4, "2001:db8:2::26", "mx-b"))
    result["clients"] = {c["id"]: c for c in runs}
    result["expectations"].append({"index": 9, "kind": "distribution", "description": "a third each",
                                   "status": "fail", "detail": "4 runs", "histogram": {"mx-a": 3, "mx-b": 1}})
    (run / "result.json").write_text(json.dumps(result))
    ctx = htmlreport.build_context(run)
    (row,) = ctx["clients"]
    assert row["runs"] == 4 and row["ok"] == 4
    assert row["first"] == "2001:db8:1::25 (mx-a) ×3, 2001:db8:2::26 (mx-b) ×1"
    assert [(r["name"], r["n"], r["pct"]) for r in row["received"]] == [("mx-a", 3, 75), ("mx-b", 1, 25)]
    assert ctx["expectations"][-1]["histogram"] == [{"name": "mx-a", "n": 3, "pct": 75},
                                                    {"name": "mx-b", "n": 1, "pct": 25}]
    text = " ".join(Page(htmlreport.render_html(run)[0]).text)
    assert "Client steps" in text and "office-glibc" in text and "3 (75%)" in text


def test_a_report_that_cannot_be_written_is_a_progress_line_not_a_failed_run(tmp_path: Path) -> None:
    said: list[str] = []
    write_html_report(tmp_path / "gone", said.append)
    assert len(said) == 1 and said[0].startswith("could not write report.html: BundleError")


def test_the_cli_re_renders_a_run_directory_and_a_matrix(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    result = CliRunner().invoke(main, ["report", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "report.html").is_file() and "report.html" in result.output
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "is not a directory" in result.output and "Traceback" not in result.output

    matrix = tmp_path / "matrix-20261202-070000"
    (matrix / "runs").mkdir(parents=True)
    shutil.move(run, matrix / "runs" / run.name)
    (run.parent / "report.html").unlink(missing_ok=True)
    rows = [{"scenario": "relay-bounce", "variant": "fixed", "suite": "bookworm", "assignment": "all postfix",
             "as_expected": True, "expectations": "5/5", "error": None, "delivered": False, "dsn_at_sender": True,
             "state": "returned", "message_ended": "relay: bounced", "bounce_ended": "mail: delivered",
             "decisive": "relay 06:43:35 postfix/smtp: ...", "run_dir": f"{matrix}/runs/{run.name}"},
            {"scenario": "relay-bounce", "variant": "broken", "suite": "bookworm", "assignment": "all exim",
             "as_expected": False, "expectations": "3/5", "error": None, "delivered": False, "dsn_at_sender": False,
             "state": "lost", "message_ended": "-", "bounce_ended": "-", "decisive": "-",
             "run_dir": "runs/matrix-x/runs/gone"}]
    (matrix / "matrix.json").write_text(json.dumps({"elapsed_s": 60.0, "rows": rows}))
    result = CliRunner().invoke(main, ["report", str(matrix)])
    assert result.exit_code == 0, result.output
    assert "no run directory for relay-bounce/broken all exim" in result.output
    page = Page((matrix / "matrix.html").read_text())
    assert f"runs/{run.name}/report.html" in page.links and (matrix / "runs" / run.name / "report.html").is_file()
    assert all("://" not in link for link in page.links)
    text = " ".join(page.text)
    assert "1/2 labs as expected" in text and "all exim" in text and "NO (3/5)" in text


def test_a_layout_dot_trips_over_is_drawn_without_the_message_arrows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = copy_run(tmp_path)
    real = graph.svg_inline

    def picky(source: str) -> str:
        if "m2 #1" in source:
            raise graph.GraphError("graphviz's dot failed (exit 1): Error: trouble in init_rank")
        return real(source)

    monkeypatch.setattr(graph, "svg_inline", picky)
    page, warnings = htmlreport.render_html(run)
    assert "<svg" in page and warnings == [
        "the messages' arrows are left out of the drawing (graphviz could not lay them out)"]


def test_each_message_has_its_own_timeline(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    ctx = htmlreport.build_context(run)
    m1 = next(m for m in ctx["messages"] if m["name"] == "m1")
    assert m1["timeline_total"] == len(m1["timeline"]) > 3
    assert {t["message"] for t in m1["timeline"]} == {"m1", "m1 bounce"}  # the bounce's events belong to it
    assert "timeline of m1" in htmlreport.render_html(run)[0]
