"""Small helpers around Prefect runs that plain code can call outside a run too."""

from __future__ import annotations

import logging
from types import ModuleType, SimpleNamespace

from prefect import Task
from prefect.cache_policies import NONE

REMOTE_TAG = "talks-to-a-server"


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Retry a server-facing step unless it failed on its input (a ValueError: a bad spec, data file
    or key): a server may come back, a bad file stays bad, and 52 s of backoff only hide it."""
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # the result cannot be read back: retry, as without a condition
        return True
    return not isinstance(error, ValueError)


# a step that talks to a server (MLflow, the bundle store): retried with backoff, never cached
REMOTE = {"retries": 4, "retry_delay_seconds": [2, 5, 15, 30], "cache_policy": NONE, "tags": [REMOTE_TAG],
          "retry_condition_fn": retry_unless_bad_input}
# a step that works on what it was given: a retry would only repeat the same error
LOCAL = {"cache_policy": NONE}


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow or task run (its lines reach the UI), else a plain logger
    (a step called as a plain function by a benchmark or a test)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("edgewave")


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


def markdown_link(label: str, where: str | None) -> str:
    """A clickable link in a Prefect artifact for a URL a browser opens; anything else as text."""
    if not where:
        return "-"
    return f"[{label}]({where})" if where.startswith(("http://", "https://")) else where


class Unwalked:
    """A task called with its arguments wrapped in Prefect's `quote`: Prefect then does not walk
    them looking for futures. Our flows call steps with plain values, and the walk was the cost:
    a rollout's record carries every site's previous state, so each step call of a 500-site rollout
    spent most of its time in `visit_collection` (measured in bench/rollout_scale.py); a dict of
    20,000 small entries took 7.3 s to walk and 0.01 s quoted. The task receives the values unwrapped."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def __call__(self, *args, **kwargs):
        from prefect.utilities.annotations import quote

        return self.task(*(quote(a) for a in args), **{k: quote(v) for k, v in kwargs.items()})

    def __getattr__(self, name: str):
        return getattr(self.task, name)


def with_retries(steps: ModuleType, delays: list[float]) -> SimpleNamespace:
    """`steps` (a module of tasks) whose server-facing tasks retry after `delays` seconds, one retry
    each: what `EDGEWAVE_REMOTE_RETRY_DELAYS_SECONDS` sets. Prefect fixes a task's retries when
    the module is imported, before any settings exist, so a flow takes its steps from here. Every
    task comes `Unwalked`."""
    def configured(value):
        if not isinstance(value, Task):
            return value
        if REMOTE_TAG in value.tags:
            value = value.with_options(retries=len(delays), retry_delay_seconds=list(delays) or 0)
        return Unwalked(value)
    return SimpleNamespace(**{name: configured(value) for name, value in vars(steps).items()
                              if not name.startswith("__")})
