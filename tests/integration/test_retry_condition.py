"""How flows call their steps: a server-facing step retries a lost connection and fails at once on bad
input; a quoted argument (not walked by Prefect) arrives unwrapped."""

from __future__ import annotations

from prefect import flow, task

from edgewave.tasks.data.spec import SpecError
from edgewave.tasks.platform.runs import REMOTE


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

def test_a_quoted_argument_reaches_the_step_unwrapped() -> None:
    """flows/rollout.py hands each step the attempt's record as `quote(record)` (Prefect does not walk
    a 2,000-site record looking for futures); the step must still receive the plain value."""
    from prefect.cache_policies import NONE
    from prefect.utilities.annotations import quote

    kinds = task(cache_policy=NONE)(lambda record, *, plan: (type(record).__name__, type(plan).__name__))
    assert flow(lambda: kinds(quote({"sites": list(range(10))}), plan=quote([1, 2])))() == ("dict", "list")
