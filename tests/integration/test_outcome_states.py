"""A rolled-back or held rollout ends in its named state, and the engine that runs a deployed flow logs
no traceback for it (the run's log in the Prefect UI ends with the outcome, not an ERROR)."""

from __future__ import annotations

import logging

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow

from edgewave.flows.rollout import RolloutEnded, outcome, result_of


@flow(name="outcome-probe")
def probe(status: str):
    return outcome({"rollout_id": "ro-m-v4-x", "kind": "rollout", "version": 4, "status": status,
                    "reason": "1 changed site(s) against 5 control(s): latency …", "waves": []})


class Recorded(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize(("status", "name"), [("rolled_back", "RolledBack"), ("held", "Held")])
def test_a_deployed_rollout_that_rolled_back_ends_in_its_state_without_a_traceback(status: str, name: str) -> None:
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(probe, parameters={"status": status})
    logger = logging.getLogger(f"edgewave.test.engine.{status}")
    recorded = Recorded()
    logger.addHandler(recorded)
    with pytest.raises(RolloutEnded):  # as the engine's process sees it: it passes an Abort on silently
        run_flow(probe, flow_run=run, error_logger=logger)  # what `python -m prefect.engine` runs
    assert [r.getMessage() for r in recorded.records if r.levelno >= logging.ERROR] == []
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state is not None and state.is_failed() and state.name == name
    assert state.message == f"ro-m-v4-x: {status}: 1 changed site(s) against 5 control(s): latency …"


def test_the_cli_still_reads_the_result_of_a_rolled_back_run() -> None:
    state = probe("rolled_back", return_state=True)
    assert state.name == "RolledBack" and result_of(state)["status"] == "rolled_back"
    assert result_of(probe("succeeded", return_state=True))["status"] == "succeeded"
