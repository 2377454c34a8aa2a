"""The rollout flow: plan waves → per wave: commit desired state, converge, bake, analyse
canary vs baseline → advance, hold or roll back → on success move @production."""

from __future__ import annotations

from prefect import flow

from edgewave.tasks.platform.runs import run_logger
from edgewave.tasks.platform.settings import active
from edgewave.tasks.rollout import steps as step


@flow(name="rollout", log_prints=True)
def rollout(version: int) -> dict:
    """Roll `version` of the model out to the fleet in waves; resumable by its rollout id."""
    settings = active()
    log = run_logger()
    controller = step.controller(settings, version)
    record = step.start(controller)
    if record.status != "running":
        log.info("%s: %s (%s); nothing to do", record.id, record.status, record.reason)
        return step.report(settings, record, noop=True)

    for wave in record.waves[controller.next_wave(record):]:
        step.defer_unreachable(controller, record, wave)
        step.observe_before(controller, record, wave)
        step.commit_wave(controller, record, wave)
        if record.status == "held":  # the desired-state remote's history was rewritten: nothing guessed
            break
        step.converge(controller, wave)
        decision = step.analyse(controller, record, wave)
        if decision == "rollback":
            step.rollback(controller, record, wave)
            break
        if decision == "hold":
            step.finish(controller, record, "held", wave.reason or "held")
            break
        step.manual_gate(controller, wave)
    else:
        step.finish(controller, record, "succeeded", f"all {len(record.waves)} waves advanced")
        if record.status == "succeeded":
            step.promote(settings, record)
    return step.report(settings, record)
