"""report.html as a person sees it: headless Chromium renders the recorded run's page.

Needs Debian's chromium and graphviz packages (`make host-tools` installs them
as root); without either the test fails and names the package, it never skips.
Chromium takes a screenshot (the page is not blank: many colours, the drawing's
segment colours in large areas, the verdict's green) and dumps the DOM it
rendered (the verdict, the SVG's host names, the expectations).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from testbed import graph, htmlreport

from test_htmlreport import Page, copy_run

WIDTH, HEIGHT = 1400, 2000


def _hex(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def chromium() -> str:
    found = shutil.which("chromium")
    if not found:
        pytest.fail("Debian's chromium package is missing (apt-get install chromium; make host-tools installs it)")
    if shutil.which("dot") is None:
        pytest.fail("graphviz's dot is missing (apt-get install graphviz; make host-tools installs it)")
    return found


def browse(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    cmd = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--user-data-dir={profile}", *args]
    done = subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}: {done.stderr.decode()[-800:]}"
    return done


def test_chromium_renders_the_report(tmp_path: Path) -> None:
    binary = chromium()
    started = time.monotonic()
    run = copy_run(tmp_path)
    target, warnings = htmlreport.write_report(run)
    assert warnings == []
    url = target.resolve().as_uri()
    shot = tmp_path / "report.png"
    browse(binary, tmp_path / "profile", f"--screenshot={shot}", f"--window-size={WIDTH},{HEIGHT}", url)

    image = Image.open(shot).convert("RGB")
    assert image.size == (WIDTH, HEIGHT)
    colours = Counter({colour: n for n, colour in image.getcolors(maxcolors=WIDTH * HEIGHT)})
    white = colours.get((255, 255, 255), 0)
    assert len(colours) > 200, f"only {len(colours)} colours: a blank or unstyled page"
    assert white < 0.9 * WIDTH * HEIGHT, "the page is almost all white"
    # The drawing rendered: large areas of the dual-stack and IPv6-only segments' fill colours;
    # the verdict's box in its green.
    for family in ("dual", "ipv6"):
        fill = _hex(graph.FAMILY_COLOURS[family][1])
        assert colours.get(fill, 0) > 20_000, f"{family} segment colour {fill}: {colours.get(fill, 0)} pixels"
    assert colours.get(_hex("#d5f5e3"), 0) > 2_000, "no green verdict box"

    dom = browse(binary, tmp_path / "profile", "--dump-dom", url).stdout.decode()
    page = Page(dom)
    text = " ".join(page.text)
    assert "as expected (5/5 expectations hold)" in text
    svg = dom[dom.index("<svg"):dom.index("</svg>")]
    for host in ("relay", "mx10", "mail", "router", "sk-imap", "bb-imap", "client", "dns"):
        assert f">{host}</text>" in svg, f"{host} is not in the rendered drawing"
    assert ">MX 10</text>" in svg and ">segment v6net (IPv6 only)</text>" in svg
    for e in json.loads((run / "result.json").read_text())["expectations"]:
        assert e["description"] in text
    assert "svg" in page.tags and "script" not in page.tags
    print(f"browser test: {time.monotonic() - started:.1f} s")  # reported, not asserted: speed is for benchmarks
