"""Progress of long work: a live display on a terminal, plain lines otherwise, nothing unheard."""

from __future__ import annotations

import io

from rich.console import Console

from edgewave.tasks.platform import progress
from edgewave.tasks.platform.progress import LiveDisplay, PlainLines, Steps, listener_for, listening


def console(terminal: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, force_terminal=terminal, width=120), out


def test_a_terminal_gets_the_live_display_and_a_pipe_plain_lines() -> None:
    live = listener_for(console(True)[0])
    try:
        assert isinstance(live, LiveDisplay)
    finally:
        live.close()
    assert isinstance(listener_for(console(False)[0]), PlainLines)


def test_plain_lines_say_where_each_line_of_work_stands_without_a_line_per_tick() -> None:
    terminal, out = console(False)
    with listening(terminal):
        progress.report("rollout v3", "sites converged", 0, 3, "wave canary")
        progress.report("rollout v3", "sites converged", 1, 3, "wave canary")  # within 5 s, same detail: quiet
        progress.report("rollout v3", "sites converged", 3, 3, "wave canary")  # complete: said
        progress.report("rollout v3", "sites converged", 3, 3, "wave canary")  # unchanged: quiet
        progress.report("rollout v3", "measurements", 1, 2, "wave canary: pass → measure")
    assert out.getvalue().splitlines() == [
        "progress: rollout v3: sites converged 0/3 (wave canary)",
        "progress: rollout v3: sites converged 3/3 (wave canary)",
        "progress: rollout v3: measurements 1/2 (wave canary: pass → measure)",
    ]
    progress.report("rollout v3", "waves", 1, 3)  # nobody listens any more
    assert len(out.getvalue().splitlines()) == 3


def test_the_live_display_draws_each_line_of_work_with_its_count() -> None:
    terminal, out = console(True)
    steps = Steps("release", ["read data", "train trees", "export ONNX"])
    with listening(terminal):
        steps.start("train trees")
        progress.report("release", "search trials", 2, 4, "RandomForestClassifier")
    shown = out.getvalue()
    assert "release" in shown and "steps" in shown and "1/3" in shown and "train trees" in shown
    assert "search trials" in shown and "2/4" in shown and "RandomForestClassifier" in shown


def test_a_broken_listener_never_breaks_the_work() -> None:
    class Broken:
        def show(self, report) -> None:
            raise OSError("the terminal went away")

        def close(self) -> None:
            pass

    progress._LISTENERS.append(Broken())
    try:
        progress.report("rollout v3", "waves", 1, 3)
    finally:
        progress._LISTENERS.clear()
