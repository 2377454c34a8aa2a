"""How the `edgewave` command talks to a person: results on stdout, progress and refusals on stderr,
every line plain text (a header such as `Rotational speed [rpm]` is printed as it is, never read as
markup), and a refusal as one line with exit code 2.

A command that runs a flow keeps Prefect's run log on disk (`EDGEWAVE_HOME/logs/runs.log`): the
terminal shows edgewave's own lines (what a step decided, a skipped image) but not the engine's
chatter or its tracebacks, so a refused rollout reads as one line, not as a crash. `--debug` (or
EDGEWAVE_DEBUG=1) shows everything, tracebacks included.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console

from edgewave.serving.errors import Actionable, describe
from edgewave.serving.redact import redact
from edgewave.tasks.platform.fleetfile import FleetFile
from edgewave.tasks.platform.settings import Settings

console = Console(stderr=True, soft_wrap=True, markup=False, highlight=False, emoji=False)  # progress, notes, refusals
out = Console(soft_wrap=True, markup=False, highlight=False, emoji=False)  # what a command answers (status, logs)
DEBUG = {"on": False}
# Loggers of third-party libraries whose INFO lines are not for the person at the terminal
# (MLflow's "Creating initial MLflow database tables...", alembic's migrations).
QUIET = ("mlflow", "alembic", "urllib3", "httpx", "git")


def refuse(what: str, message: str) -> NoReturn:
    """End the command with one plain line `what: message` (credentials redacted) and exit code 2."""
    console.print(f"{what}: {redact(message)}", style="red")
    raise typer.Exit(2)


def failed(what: str, exc: BaseException) -> NoReturn:
    """End a command whose flow run failed: one line; exit 2 for a failure a person can act on, else 1.
    The traceback is in the run log (or on the terminal with --debug)."""
    actionable = isinstance(exc, Actionable)
    console.print(f"{what} failed: {type(exc).__name__}: {redact(str(exc))}"
                  + ("" if actionable or DEBUG["on"] else " (traceback in the run log: EDGEWAVE_HOME/logs/runs.log)"),
                  style="red")
    raise typer.Exit(2 if actionable else 1)


def read_settings() -> Settings:
    """This command's settings, validated, and nothing else done (no folder made, no library set up)."""
    try:
        return Settings()
    except ValidationError as exc:
        refuse("invalid settings", describe(exc))


def settings() -> Settings:
    """This command's settings, validated and applied (state under EDGEWAVE_HOME; Prefect and MLflow
    pointed at it); third-party INFO lines kept off the terminal."""
    loaded = read_settings()
    if not DEBUG["on"]:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow sets its loggers' level at import
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
    loaded.apply_runtime_environment()
    return loaded


def fleet_file(loaded: Settings) -> FleetFile:
    """The fleet file, or a one-line refusal naming the field (before anything is deployed)."""
    from edgewave.tasks.platform.fleetfile import PolicyError, load_fleet_file

    try:
        return load_fleet_file(loaded.fleet_path)
    except PolicyError as exc:
        refuse("invalid fleet file", str(exc))


class _OwnLines(logging.Filter):
    """Passes the lines edgewave's own code logs in a flow run; drops Prefect's engine lines, other
    libraries' (urllib3's connection retries) and any line with a traceback (all stay in the run log)."""

    def __init__(self) -> None:
        super().__init__()
        import edgewave.flows
        import edgewave.serving
        import edgewave.tasks

        self.ours = tuple(str(Path(package.__file__ or "").parent) + os.sep
                          for package in (edgewave.flows, edgewave.tasks, edgewave.serving))

    def filter(self, record: logging.LogRecord) -> bool:
        return record.exc_info is None and record.pathname.startswith(self.ours)


def prepare_flows(loaded: Settings) -> Path:
    """Before a command runs flows: from here to its end every line Prefect's loggers print goes to
    `EDGEWAVE_HOME/logs/runs.log` too, and the terminal keeps only edgewave's own lines (all of
    them with --debug); and Prefect's temporary API is started, one command at a time per home
    (tasks/platform/runs.py). Returns the log's path."""
    import prefect  # noqa: F401  (configures Prefect's logging, and so its console handlers)
    from prefect.logging.handlers import PrefectConsoleHandler

    from edgewave.tasks.platform.runs import start_temporary_api

    path = loaded.home / "logs" / "runs.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    on_disk = logging.FileHandler(path, encoding="utf-8")
    on_disk.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    own_lines = _OwnLines()
    loggers = [logging.getLogger(), *(logging.getLogger(n) for n in list(logging.root.manager.loggerDict))]
    attached = [(lg, h) for lg in loggers for h in list(getattr(lg, "handlers", []))
                if isinstance(h, PrefectConsoleHandler)]
    targets = {id(lg): lg for lg, _ in attached}
    if id(logging.getLogger()) not in targets:  # edgewave's own errors (a site's failed drift check) on disk too
        targets[id(logging.getLogger("edgewave"))] = logging.getLogger("edgewave")
    for logger in targets.values():
        logger.addHandler(on_disk)
    for _, handler in attached:
        if not DEBUG["on"]:
            handler.addFilter(own_lines)
    start_temporary_api()
    return path
