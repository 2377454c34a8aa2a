"""Progress of long work for the person watching it: a release's steps, a rollout's waves, the
sites converged and the measurements taken.

The flows and the rollout controller call `report(...)`; whoever started them decides what a
person sees. The `edgewave` command listens (`listening(console)`): a live rich display when
its output is a terminal, plain lines otherwise (CI logs, `make run | tee`). A flow run under a
Prefect worker has no listener, and a report then costs one check of an empty list.

A report names a line of work (`"waves"`, `"sites converged"`) and where it stands on it, so a
listener shows the latest state of each line, not a stream of events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console
from rich.progress import TaskID


@dataclass(frozen=True)
class Report:
    """Where one line of work stands: `done` of `total` (None: open-ended), with a short detail."""

    work: str
    line: str
    done: int
    total: int | None = None
    detail: str = ""

    def text(self) -> str:
        """`rollout v3: sites converged 2/3 (wave canary)`: one plain line."""
        count = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        return f"{self.work}: {self.line} {count}" + (f" ({self.detail})" if self.detail else "")


class Listener(Protocol):
    def show(self, report: Report) -> None: ...

    def close(self) -> None: ...


_LISTENERS: list[Listener] = []
_LOCK = threading.Lock()


def report(work: str, line: str, done: int, total: int | None = None, detail: str = "") -> None:
    """Tell whoever listens where `line` of `work` stands; nothing when nobody does. A listener that
    fails never fails the work: progress is for a person, the work is for the fleet."""
    if not _LISTENERS:
        return
    shown = Report(work, line, done, total, detail)
    with _LOCK:
        for listener in list(_LISTENERS):
            try:
                listener.show(shown)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                logging.getLogger("edgewave").debug("progress listener failed: %s", exc)


class PlainLines:
    """Plain lines for a console that is not a terminal: a line of work is printed when its detail
    changes, when it completes, and otherwise at most every `every` seconds (no line per epoch)."""

    def __init__(self, console: Console, every: float = 5.0) -> None:
        self.console, self.every = console, every
        self.last: dict[tuple[str, str], tuple[Report, float]] = {}

    def show(self, report: Report) -> None:
        key, now = (report.work, report.line), time.monotonic()
        if key in self.last:
            previous, at = self.last[key]
            if previous == report:
                return
            milestone = report.detail != previous.detail or report.done == report.total
            if not milestone and now - at < self.every:
                return
        self.last[key] = (report, now)
        self.console.print(f"progress: {report.text()}", highlight=False, markup=False)

    def close(self) -> None:
        pass


class LiveDisplay:
    """A rich progress display, one bar per line of work, redrawn in place on a terminal.

    Prefect's console log handlers print through the display's console while it is live, so its
    log lines scroll above the bars instead of tearing them."""

    def __init__(self, console: Console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("[bold]{task.fields[work]}[/bold] {task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                 console=console, transient=False)
        self.tasks: dict[tuple[str, str], TaskID] = {}
        self.handlers = _prefect_console_handlers()
        self.consoles = [h.console for h in self.handlers]
        for handler in self.handlers:
            handler.console = console
        self.progress.start()

    def show(self, report: Report) -> None:
        key = (report.work, report.line)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(report.line, total=report.total, work=report.work, detail="")
        self.progress.update(self.tasks[key], completed=report.done, total=report.total, detail=report.detail)

    def close(self) -> None:
        self.progress.stop()
        for handler, console in zip(self.handlers, self.consoles, strict=True):
            handler.console = console


def _prefect_console_handlers() -> list:
    """Prefect's console handlers, wherever logging.yml attached them."""
    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    found = {id(h): h for lg in loggers for h in getattr(lg, "handlers", []) if isinstance(h, PrefectConsoleHandler)}
    return list(found.values())


def listener_for(console: Console) -> Listener:
    """A live display on a terminal, plain lines otherwise."""
    return LiveDisplay(console) if console.is_terminal else PlainLines(console)


@contextmanager
def listening(console: Console) -> Iterator[Listener]:
    """Show the progress of the work done inside the block on `console`."""
    listener = listener_for(console)
    with _LOCK:
        _LISTENERS.append(listener)
    try:
        yield listener
    finally:
        with _LOCK:
            _LISTENERS.remove(listener)
        listener.close()


class Steps:
    """A fixed sequence of named steps as one line of work: `release: steps 3/9 (train scikit-learn)`."""

    def __init__(self, work: str, names: list[str]) -> None:
        self.work, self.names, self.done = work, names, 0

    def start(self, name: str) -> None:
        """`name` begins: the steps before it are done."""
        self.done = self.names.index(name)
        report(self.work, "steps", self.done, len(self.names), name)

    def finish(self, detail: str = "done") -> None:
        report(self.work, "steps", len(self.names), len(self.names), detail)
