"""Progress on long work: live bars on a terminal, the same status lines elsewhere."""

from __future__ import annotations

import io

from rich.console import Console

from testbed.progressview import ProgressView


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=120), buf


def test_not_a_terminal_prints_status_lines_only() -> None:
    con, buf = console(False)
    with ProgressView(con) as view:
        assert not view.live
        view.image("image postfix", "building testbed/postfix:bookworm (missing)")
        view.image("image postfix", "Step 3/9 : RUN apt-get install -y postfix")  # a build's own output: not shown
        view.image("image postfix", "built testbed/postfix:bookworm in 12.0s")
        view.lab("mx-routing/broken", "bringing up 10 containers on 3 segments")
        view.lab("mx-routing/broken", "mx10 up (postfix, dual)")
    text = buf.getvalue()
    assert "building testbed/postfix" in text and "built testbed/postfix" in text and "Step 3/9" not in text
    assert "bringing up 10 containers" in text and "mx10 up" in text


def test_a_terminal_gets_bars_with_counts() -> None:
    con, buf = console(True)
    with ProgressView(con) as view:
        assert view.live
        view.image("image postfix", "building testbed/postfix:bookworm (missing)")
        view.image("image postfix", "Step 3/9 : RUN apt-get install -y postfix")
        view.lab("lab/broken", "bringing up 3 containers on 1 segments")
        for host in ("a", "b"):
            view.lab("lab/broken", f"{host} up (postfix, dual)")
        view.lab("lab/broken", "step 2: send m1")
        view.cell(1, 4, "[1/4] relay-bounce/broken: lost", False)
        tasks = {t.description: t for t in view._progress.tasks}
        assert (tasks["image postfix"].completed, tasks["image postfix"].total) == (2, 9)
        assert (tasks["lab/broken bring-up"].completed, tasks["lab/broken bring-up"].total) == (2, 3)
        assert tasks["matrix cells"].fields["note"] == "1 not as expected so far"
    text = buf.getvalue()
    assert "[1/4] relay-bounce/broken: lost" in text and "building testbed/postfix" in text
