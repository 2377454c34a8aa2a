"""A server-facing step retries a lost connection, and fails at once on bad input."""

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
