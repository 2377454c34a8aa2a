"""Small helpers around Prefect runs that plain code can call outside a run too."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypedDict, TypeVar, cast

from prefect import Task
from prefect.cache_policies import NONE, CachePolicy
from prefect.client.schemas.objects import State, TaskRun

if TYPE_CHECKING:
    from edgewave.tasks.platform.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")
REMOTE_TAG = "talks-to-a-server"


def retry_unless_bad_input(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry a server-facing step unless it failed on its input (a ValueError: a bad spec, data file
    or key): a server may come back, a bad file stays bad, and 52 s of backoff only hide it."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result cannot be read back: retry, as without a condition
        return True
    return not isinstance(error, ValueError)


class TaskOptions(TypedDict, total=False):
    """What a step's `@task(...)` is given besides its name (typed, so a checker matches the decorator)."""

    retries: int
    retry_delay_seconds: list[float]
    cache_policy: CachePolicy
    tags: list[str]
    retry_condition_fn: Callable[[Task, TaskRun, State], bool]


# a step that talks to a server (MLflow, the bundle store): retried with backoff, never cached
REMOTE: TaskOptions = {"retries": 4, "retry_delay_seconds": [2, 5, 15, 30], "cache_policy": NONE,
                       "tags": [REMOTE_TAG], "retry_condition_fn": retry_unless_bad_input}
# a step that works on what it was given: a retry would only repeat the same error
LOCAL: TaskOptions = {"cache_policy": NONE}


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (its lines reach the UI), else a plain logger
    (a step called as a plain function by a benchmark or a test)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("edgewave")


class _NoEmptyTraceback(logging.Filter):
    """Prefect logs a task that returned a Failed state (a wave's verdict: tasks/rollout/steps.verdict)
    with `exc_info=True` outside any exception, which prints "NoneType: None" under its line: a decided
    failure has no traceback, so the line stands alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[0] is None:
            record.exc_info = None
        return True


def quiet_decided_failures() -> None:
    """Install `_NoEmptyTraceback` on Prefect's task-run logger (once per process)."""
    logger = logging.getLogger("prefect.task_runs")
    if not any(isinstance(f, _NoEmptyTraceback) for f in logger.filters):
        logger.addFilter(_NoEmptyTraceback())


def name_run(name: str) -> None:
    """Name the current flow run after what it does (`release v3`, `rollout v3 → 6 sites`) once that
    is known, for the runs list of the Prefect UI; nothing outside a flow run. A name is a label:
    if the API refuses it, the run goes on under its first name."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        return
    try:
        with get_client(sync_client=True) as client:
            client.update_flow_run(context.flow_run.id, name=name)
    except Exception as exc:  # noqa: BLE001 - see the docstring
        run_logger().warning("could not name the run %r: %s", name, exc)


NOW = " Now: "  # where a deployment's description of the current state begins (`describe_deployment`)


def now_said(text: str | None, now: str) -> str:
    """`text` with its " Now: …" part (if any) replaced by `now`."""
    return f"{(text or '').split(NOW)[0]}{NOW}{now}"


def describe_deployment(name: str, now: str, field: str, parameters: dict | None = None) -> bool:
    """Say on a deployment's page and in its Run form what holds now (`rollout/rollout`: which version
    is @staging): the description and the form's `field` keep their own text and get " Now: <now>";
    `parameters` become the form's defaults. False when the API has no such deployment (a temporary
    API, or not deployed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            deployment = client.read_deployment_by_name(name)
            schema = dict(deployment.parameter_openapi_schema or {})
            properties = {**schema.get("properties", {})}
            if field in properties:
                properties[field] = {**properties[field], "description": now_said(properties[field].get("description"), now)}
            update: dict = {"description": now_said(deployment.description, now)}
            if schema:
                update["parameter_openapi_schema"] = {**schema, "properties": properties}
            if parameters is not None:
                update["parameters"] = parameters
            client.update_deployment(deployment.id, DeploymentUpdate(**update))
    except ObjectNotFound:
        return False
    return True


def prefect_run_url() -> str | None:
    """The Prefect UI's page of the current flow run, for links from MLflow; None outside a flow run or
    on Prefect's temporary API, which stops with the command (no UI a person could open later). A
    server is one the environment names (PREFECT_API_URL: `make up`'s worker, a shell that exports it);
    inside a run Prefect resolves a temporary API's address too, so the environment is what tells."""
    import os

    from prefect.runtime import flow_run

    if not os.environ.get("PREFECT_API_URL"):
        return None
    url = flow_run.ui_url
    return url if url and url.startswith(("http://", "https://")) else None


def markdown_link(label: str, where: str | None) -> str:
    """A clickable link in a Prefect artifact for a URL a browser opens; anything else as text."""
    if not where:
        return "-"
    return f"[{label}]({where})" if where.startswith(("http://", "https://")) else where


def retried(step: Task[P, R], settings: Settings) -> Task[P, R]:
    """`step` (a server-facing task) retried on the schedule `EDGEWAVE_REMOTE_RETRY_DELAYS_SECONDS`
    sets, one retry per delay. Prefect fixes a task's retries when its module is imported, before
    any settings exist, so a flow calls such a step as `retried(steps.register, settings)(...)`:
    the step is still named where it is called, for a reader and an editor alike."""
    delays = settings.remote_retry_delays_seconds
    return step.with_options(retries=len(delays), retry_delay_seconds=list(delays) or 0)


def unwalked(value: R) -> R:
    """`value` handed to a task without Prefect walking it for futures (Prefect's `quote`): a rollout's
    record carries every site's previous state, and walking it on each step call of a 500-site
    rollout was most of that step's time (bench/rollout_scale.py; a dict of 20,000 small entries:
    7.3 s walked, 0.01 s quoted). The task receives `value` itself; typed as `value`'s type so a
    checker still matches the step's signature."""
    from prefect.utilities.annotations import quote

    return cast(R, quote(value))


def start_temporary_api() -> None:
    """Start Prefect's temporary API now, unless a server is set (PREFECT_API_URL). Every command without
    a server starts one on the home's SQLite database; two starting at once on a new database raced its
    migrations ("duplicate column name: block_type_name") and the loser's flow ran a minute late. So the
    first start in a Prefect home (the one that creates and migrates the database) is one process at a
    time; later ones start side by side. Prefect keeps one such server per process: the flows then use it."""
    import fcntl

    from prefect.settings import PREFECT_API_URL, PREFECT_HOME

    if PREFECT_API_URL.value():
        return
    from prefect.server.api.server import SubprocessASGIServer  # Prefect's server code: seconds to import

    home = Path(PREFECT_HOME.value())
    home.mkdir(parents=True, exist_ok=True)
    migrated = home / "temporary-api.migrated"
    if not migrated.exists():
        with open(home / "temporary-api.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if not migrated.exists():
                SubprocessASGIServer().start()
                migrated.touch()
    SubprocessASGIServer().start()  # nothing to do when this process started it above
