"""The rollout and rollback flows: take the model's lease → per wave: commit desired state,
converge, bake, analyse canary vs baseline → advance, hold or roll back → on success move
@production, then release the lease. A rollback is the same sequence for an older version,
marked as a rollback in Git and MLflow."""

from __future__ import annotations

from prefect import flow
from prefect.client.schemas.objects import State
from prefect.exceptions import Abort
from prefect.runtime import flow_run
from prefect.states import Completed, Failed

from edgewave.tasks.platform.runs import name_run, quiet_decided_failures, retried, run_logger, unwalked
from edgewave.tasks.platform.settings import Settings, active
from edgewave.tasks.release import steps as release_steps
from edgewave.tasks.rollout import steps
from edgewave.tasks.rollout.controller import Controller, Observed, next_wave
from edgewave.tasks.rollout.gitops import HistoryRewritten
from edgewave.tasks.rollout.record import Kind, RolloutRecord, headline


def _rollback_name() -> str:
    to = flow_run.parameters.get("to")
    return f"rollback to v{to}" if to else "rollback to @previous"


@flow(name="rollout", log_prints=True, flow_run_name="rollout v{version}")
def rollout(version: int, reason: str = "", wait: bool = False) -> State:
    """Roll a version of the model out to the fleet in waves, each judged against the sites it did not
    change, rolled back by itself when a wave fails; resumable while its attempt runs.

    Args:
        version: The registered model version to roll out (normally the one @staging points at, which
            passed the quality gate; MLflow shows @staging and @production on the model's page).
        reason: Why, for the record: kept in Git, on the MLflow version and on this run.
        wait: If a rollout of the model is already running, wait for it to end instead of refusing.
    """
    return outcome(run(active(), version, "rollout", reason, wait))


@flow(name="rollback", log_prints=True, flow_run_name=_rollback_name)
def rollback(to: int | None = None, reason: str = "", wait: bool = False) -> State:
    """Return the fleet to an older version through the same waves and analysis, marked as a rollback.

    Args:
        to: The version to return to; empty: the one @previous points at (production before the last rollout).
        reason: Why, for the record: kept in Git, on the MLflow version and on this run.
        wait: If a rollout of the model is already running, wait for it to end instead of refusing.
    """
    settings = active()
    return outcome(run(settings, steps.rollback_target(settings, to), "rollback", reason, wait))


def run(settings: Settings, version: int, kind: Kind, reason: str, wait: bool) -> dict:
    """The one rollout sequence, for both flows.

    Each step returns the attempt's record as it now stands (and the analysis what it observed);
    they go to the next step `unwalked`, so Prefect passes them as they are instead of walking a
    record of every site's previous state on each call (bench/rollout_scale.py)."""
    log = run_logger()
    quiet_decided_failures()  # a wave's failed verdict is logged as an ERROR line, without "NoneType: None"
    controller = steps.controller(settings, version, kind, reason, wait)
    record = steps.start(controller)
    sites = sum(len(wave.sites) for wave in record.waves)
    name_run(f"{kind} {'to ' if kind == 'rollback' else ''}v{version} → {sites} site{'s' * (sites != 1)}")
    if record.status != "running":
        log.info("%s: %s (%s); nothing to do", record.id, record.status, record.reason)
        return retried(steps.report, settings)(settings, unwalked(record), noop=True)

    record = _waves(controller, settings, record)
    name_run(headline(record))  # the runs list says how it ended: "rollout v4: rolled back at wave rest — p99"
    return retried(steps.report, settings)(settings, unwalked(record))


def _waves(controller: Controller, settings: Settings, record: RolloutRecord) -> RolloutRecord:
    """Each wave in turn until the attempt ends: the record as it ended. A remote whose history was
    rewritten, met on the way, holds the attempt as it stands: nothing more is pushed. (Met at the
    start, it refuses the run before anything: `steps.start`.)"""
    observed = Observed()
    try:
        for wave in range(next_wave(record), len(record.waves)):
            record = steps.defer_unreachable(controller, unwalked(record), wave)
            observed = steps.observe_before(controller, unwalked(record), wave, unwalked(observed))
            record = steps.commit_wave(controller, unwalked(record), wave)
            if record.status == "held":  # the desired-state remote's history was rewritten: nothing guessed
                break
            record = steps.converge(controller, unwalked(record), wave)
            record, observed = steps.analyse(controller, unwalked(record), wave, unwalked(observed))
            if record.waves[wave].decision == "advance":
                record = steps.manual_gate(controller, record, wave)
            decision = record.waves[wave].decision
            steps.verdict(record.waves[wave].name, decision or "none", record.waves[wave].reason or "",
                          return_state=True)  # a failed wave is a red node, not an exception of the flow
            if decision == "rollback":
                record = steps.rollback(controller, unwalked(record), wave)
                break
            if decision == "hold":
                record = steps.finish(controller, unwalked(record), "held", record.waves[wave].reason or "held")
                break
        else:
            record = steps.finish(controller, unwalked(record), "succeeded", f"all {len(record.waves)} waves advanced")
            if record.status == "succeeded":
                retried(steps.promote, settings)(settings, unwalked(record))
                steps.release(controller, unwalked(record))
                release_steps.show_versions_on_forms(settings)  # @production and @previous moved
    except HistoryRewritten as exc:  # met renewing the lease or rolling back: held as it stands
        record = controller.held_by_rewrite(record, exc)
    return record


class RolloutEnded(Abort):
    """What a rolled-back or held run's final state carries: the rollout's result. The run's state
    (Failed, named RolledBack or Held, with the reason) is the outcome; nothing crashed. A deployed run's
    engine asks the final state for its result and logs whatever that raises as "Engine execution exited
    with unexpected exception" with a traceback; a dict raised a TypeError there, any exception its own
    traceback. Only an `Abort` is passed on without a word, so this is one."""

    def __init__(self, result: dict) -> None:
        super().__init__(f"{result['rollout_id']}: {result['status']}: {result['reason']}")
        self.result = result


def outcome(result: dict) -> State:
    """The flow run's final state says how the rollout ended: the runs list shows which went wrong."""
    if result["status"] in ("succeeded", "noop"):
        return Completed(message=f"{result['rollout_id']}: {result['status']}", data=result)
    name = {"rolled_back": "RolledBack", "held": "Held"}.get(result["status"], "Failed")
    ended = RolloutEnded(result)
    return Failed(name=name, message=str(ended), data=ended)


def result_of(state: State) -> dict:
    """A finished rollout's result dict, whatever its final state (raises the error of a crashed run)."""
    result = state.result(raise_on_failure=False)
    if isinstance(result, RolloutEnded):
        return result.result
    if isinstance(result, BaseException):
        raise result
    return result
