"""A rolled-back or held rollout ends in its named state, and the engine that runs a deployed flow logs
no traceback for it (the run's log in the Prefect UI ends with the outcome, not an ERROR)."""

from __future__ import annotations

import logging

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.flow_engine import run_flow

from edgewave.flows.rollout import RolloutEnded, outcome, result_of
from tests.helpers import wait_for


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


@flow(name="verdict-probe")
def verdicts() -> None:
    from edgewave.tasks.platform.runs import quiet_decided_failures
    from edgewave.tasks.rollout.steps import verdict

    quiet_decided_failures()
    verdict("canary", "advance", "no metric moved beyond the controls", return_state=True)
    verdict("rest", "rollback", "1 changed site(s) against 5 control(s): latency", return_state=True)


def test_the_wave_that_failed_is_a_red_node_of_the_graph_and_its_log_has_no_traceback() -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId

    state = verdicts(return_state=True)
    assert state.is_completed(), "a decided failure is not an exception of the flow"
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
        shown = {t.name: (t.state.type.value, t.state.name, t.state.message) for t in tasks if t.state}
        assert shown == {"wave canary: advance": ("COMPLETED", "Advanced", "no metric moved beyond the controls"),
                         "wave rest: rollback": ("FAILED", "RollBack", "1 changed site(s) against 5 control(s): latency")}

        def logged() -> str:
            return "\n".join(log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))

        wait_for(lambda: "Finished in state RollBack" in logged(), 60, "the run's log in the API")  # shipped in batches
        text = logged()
    assert "Task run failed with state: RollBack" in text
    assert "Traceback" not in text and "NoneType: None" not in text, text
