"""How flows call their steps: a server-facing step retries a lost connection and fails at once on bad
input; steps get their arguments unwalked by Prefect, and unwrapped."""

from __future__ import annotations

from prefect import flow, task

from edgewave.tasks.platform.runs import REMOTE
from edgewave.tasks.release.spec import SpecError


def test_a_server_facing_step_retries_a_connection_error_but_not_a_bad_file() -> None:
    calls: dict[str, int] = {"bad file": 0, "connection": 0}

    @task(**{**REMOTE, "retry_delay_seconds": 0})
    def step(kind: str) -> None:
        calls[kind] += 1
        raise SpecError("dataset.yaml: target: not binary") if kind == "bad file" else ConnectionError("refused")

    @flow
    def both() -> None:
        for kind in calls:
            try:
                step(kind)
            except (SpecError, ConnectionError):
                pass

    both()
    assert calls == {"bad file": 1, "connection": 1 + REMOTE["retries"]}

def test_steps_get_their_arguments_unwalked_and_unwrapped() -> None:
    """A flow's steps are called with quoted arguments (Prefect does not walk a 2,000-site record
    looking for futures), and the task still receives the plain values."""
    from types import ModuleType

    from prefect import flow, task
    from prefect.cache_policies import NONE

    from edgewave.tasks.platform.runs import Unwalked, with_retries

    module = ModuleType("steps")
    module.kinds = task(cache_policy=NONE)(lambda record, *, plan: (type(record).__name__, type(plan).__name__))
    steps = with_retries(module, [])
    assert isinstance(steps.kinds, Unwalked)
    assert flow(lambda: steps.kinds({"sites": list(range(10))}, plan=[1, 2]))() == ("dict", "list")
