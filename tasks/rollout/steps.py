"""Thin Prefect tasks of the rollout flow over tasks/rollout/controller.py.

Side effects (commits, alias moves) have `cache_policy=NONE` and are keyed by the rollout id:
re-running a step after a crash finds its commit already in Git and makes none.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from prefect import task
from prefect.client.schemas.objects import State
from prefect.input import RunInput
from pydantic import Field

from edgewave.tasks.platform.fleetfile import Site, load_fleet_file
from edgewave.tasks.platform.runs import LOCAL, REMOTE
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import registry
from edgewave.tasks.rollout.controller import Controller, Io, Observed
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.lease import Lease, RolloutBusy
from edgewave.tasks.rollout.lease import path as lease_path
from edgewave.tasks.rollout.record import (
    Kind,
    RolloutRecord,
    Status,
    headline,
    judgement,
    reasons,
    report_markdown,
    summary,
)
from edgewave.tasks.rollout.telemetry import Reading, prometheus_readings, scrape_sites, warn_once


def controller(settings: Settings, version: int, kind: Kind = "rollout", reason: str = "", wait: bool = False,
               io: Io | None = None) -> Controller:
    """Everything the rollout needs to know before its first step (fails fast on bad input)."""
    from prefect import get_run_logger

    fleet_file = load_fleet_file(settings.fleet_path)
    bundle_url, sha256 = registry.rollout_target(settings, version)
    if io is None:
        logger = get_run_logger()
        io = Io(repo=DesiredStateRepo.of(settings, logger.info).ensure(),
                read=reader(settings, fleet_file, warn_once(logger.warning)), log=logger.info)
    finish_interrupted_promotion(settings, io)
    production = registry.alias_version(settings, registry.PRODUCTION)
    k8s_sites = [s.id for s in fleet_file.fleet.sites if s.kind == "k8s"]
    image = registry.serving_image(settings, version) if k8s_sites else None
    if k8s_sites and not image:  # fail before anything is committed, not at the first K8s wave
        raise LookupError(f"{settings.model_name} v{version} has no serving image, but {k8s_sites} run on Kubernetes: "
                          "release it with a Docker engine reachable (EDGEWAVE_DOCKER_HOST)")
    return Controller(fleet_file, settings.model_name, version, bundle_url, sha256, production, io, image, kind,
                      reason, settings.rollout_lease_seconds, settings.rollout_wait_seconds if wait else 0.0,
                      settings.fleet_identity())


def finish_interrupted_promotion(settings: Settings, io: Io) -> None:
    """An attempt whose waves all advanced and whose record says so, but whose controller died
    before @production moved (its lease is still `promoting`): move it now, then free the lease."""
    io.repo.sync()
    text = io.repo.read_file(lease_path(settings.model_name))
    lease = Lease.model_validate_json(text) if text else None
    if lease is None or lease.phase != "promoting" or not lease.stale(io.now()):
        return
    record = io.repo.record(lease.rollout_id)
    if record is None or record["status"] != "succeeded":
        return
    promote.fn(settings, RolloutRecord.model_validate(record))

    def unchanged(repo) -> None:
        if repo.read_file(lease_path(settings.model_name)) != text:
            raise RolloutBusy(f"the lease of {lease.rollout_id} changed while its promotion was repaired")
    io.repo.commit([], f"{lease.rollout_id}: succeeded; @production moved by {socket.gethostname()} after its "
                   "controller stopped; lease released", extra={lease_path(settings.model_name): None},
                   precondition=unchanged)
    io.log(f"{lease.rollout_id}: its controller stopped before moving @production; moved it to v{record['version']}")


def reconcile(settings: Settings, log: Callable[[str], None]) -> None:
    """`edgewave reconcile`: accept the desired-state remote's history as it is now (after a person
    looked at what rewrote it), and release the lease of each attempt that held because of the
    rewrite, marking its record held, in one commit on the new history. Nothing else is changed:
    the desired state stays what the new history says, and the next rollout plans from it."""
    repo = DesiredStateRepo.of(settings, log)
    if not (repo.path / ".git").exists():
        repo.ensure()  # no clone yet: the remote's history is the only one there is
    before, head = repo.accept_remote()
    if before and before != head:
        log(f"accepted the remote's history: {settings.model_name}'s desired state now stands on {head[:12]} "
            f"(this controller last saw {before[:12]})")
    else:
        log(f"the remote's history is the one this controller saw ({head[:12]}); nothing to accept")
    held = repo.held_by_rewrite()
    text = repo.read_file(lease_path(settings.model_name))
    lease = Lease.model_validate_json(text) if text else None
    if lease is not None and lease.rollout_id in held:
        record = repo.record(lease.rollout_id)
        reason = "held: the remote's history was rewritten; lease released by `edgewave reconcile`"
        if record is not None and record.get("status") == "running":
            record = {**record, "status": "held", "reason": reason}
        repo.commit([], f"{lease.rollout_id}: {reason}", (lease.rollout_id, record) if record else None,
                     extra={lease_path(settings.model_name): None})
        log(f"released the lease of {lease.rollout_id} (held when the history was rewritten)")
    elif lease is not None:
        log(f"the lease of {lease.rollout_id} stays: that attempt did not hold here (it ends, or expires "
            f"at {lease.expires_at:%H:%M:%S} UTC)")
    repo.held_by_rewrite(forget=True)


def rollback_target(settings: Settings, to: int | None) -> int:
    """The version a rollback returns the fleet to: `to`, else the one @previous points at."""
    if to is not None:
        return to
    previous = registry.alias_version(settings, registry.PREVIOUS)
    if previous is None:
        raise LookupError(f"{settings.model_name} has no @previous version to roll back to; name one with --to")
    return previous


def reader(settings: Settings, fleet_file,
           warn: Callable[[str], None]) -> Callable[[list[Site]], dict[str, Reading | None]]:
    """Telemetry from Prometheus (PromQL) when EDGEWAVE_PROMETHEUS_URL is set, else site scrapes;
    either way only from endpoints that state they are the site, of this home's fleet."""
    fleet = settings.fleet_identity()
    if settings.prometheus_url:
        url, age = settings.prometheus_url, settings.prometheus_max_age_seconds
        return lambda sites: prometheus_readings(url, sites, fleet, max_age_seconds=age, warn=warn)
    return lambda sites: scrape_sites(sites, fleet, fleet_file.rollout.concurrency, warn)


@task(name="start-rollout", **LOCAL)
def start(c: Controller) -> RolloutRecord:
    return c.start()


@task(name="defer-unreachable", **LOCAL)
def defer_unreachable(c: Controller, record: RolloutRecord, wave: int) -> RolloutRecord:
    return c.defer_unreachable(record, wave)


@task(name="observe-before", **LOCAL)
def observe_before(c: Controller, record: RolloutRecord, wave: int, observed: Observed) -> Observed:
    return c.observe_before(record, wave, observed)


@task(name="commit-wave", **LOCAL)
def commit_wave(c: Controller, record: RolloutRecord, wave: int) -> RolloutRecord:
    return c.commit_wave(record, wave)


@task(name="converge", **LOCAL)
def converge(c: Controller, record: RolloutRecord, wave: int) -> RolloutRecord:
    return c.converge(record, wave)


@task(name="analyse-wave", **LOCAL)
def analyse(c: Controller, record: RolloutRecord, wave: int, observed: Observed) -> tuple[RolloutRecord, Observed]:
    return c.analyse(record, wave, observed)


@task(name="wave-verdict", task_run_name="wave {wave_name}: {decision}", **LOCAL)
def verdict(wave_name: str, decision: str, reason: str) -> State:
    """The wave's decision as a node of the run's graph: red (Failed, named RollBack or Held, the reason
    as its message) where the rollout stopped, green where a wave advanced."""
    from prefect.states import Completed, Failed

    if decision in ("rollback", "hold"):
        return Failed(name={"rollback": "RollBack", "hold": "Held"}[decision], message=reason)
    return Completed(name="Advanced", message=reason)


@task(name="rollback", **LOCAL)
def rollback(c: Controller, record: RolloutRecord, wave: int) -> RolloutRecord:
    return c.rollback(record, wave)


@task(name="finish-rollout", **LOCAL)
def finish(c: Controller, record: RolloutRecord, status: Status, reason: str) -> RolloutRecord:
    return c.finish(record, status, reason)


@task(name="promote", **REMOTE)
def promote(settings: Settings, record: RolloutRecord) -> None:
    """@production → the new version, @previous → the old one; the result tagged on the version."""
    registry.promote(settings, record.version)
    registry.tag_version(settings, record.version, {"rollout_id": record.id, "rollout_result": record.status,
                                                    "rollout_kind": record.kind})


@task(name="release-lease", **LOCAL)
def release(c: Controller, record: RolloutRecord) -> str | None:
    """The attempt is over (for a success: @production has moved): the next rollout may start."""
    return c.release(record)


class GateAnswer(RunInput):
    """The form a person fills in at a manual gate (the Prefect UI's Resume dialog)."""

    approve: bool = Field(description="On: go on to the next wave. Off: roll back every site this rollout changed.")
    reason: str = Field(min_length=1, description="Why: kept in the rollout record, its Git commit and the run's log.")


def gate_key(record: RolloutRecord, wave: int) -> str:
    """The pause's key: one answer per wave of an attempt (`edgewave approve` finds the form by it)."""
    return f"gate-{record.id}-wave-{wave + 1}".lower()  # Prefect's keys: lowercase letters, digits, dashes


def manual_gate(c: Controller, record: RolloutRecord, wave: int) -> RolloutRecord:
    """After a wave whose policy asks for it, pause the flow run until a person approves the next wave
    or rejects it, with a reason; no answer within the gate's timeout holds the attempt. Called from the
    flow, not a task: only a flow run pauses."""
    _, policy = c.plan(record)
    gate = policy.waves[wave]
    if not gate.manual_gate:
        return record
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    c.await_approval(record, wave, gate.manual_gate_timeout_seconds)
    try:
        answer = pause_flow_run(wait_for_input=GateAnswer,
                                timeout=int(gate.manual_gate_timeout_seconds), key=gate_key(record, wave))
    except FlowPauseTimeout:
        return c.approved(record, wave, None, f"no answer at the manual gate after wave {record.waves[wave].name} "
                                              f"within {gate.manual_gate_timeout_seconds:g} s")
    return c.approved(record, wave, answer.approve, answer.reason)


class NoGateWaiting(LookupError):
    """No rollout waits at a manual gate (or several do and none was named)."""


def answer_gate(approve: bool, reason: str, run: str | None = None) -> str:
    """Resume a rollout run paused at a manual gate with a person's answer, as the Prefect UI's Resume
    form does: the run named by its id or name, else the only one paused. Returns the run's name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.flow_runs import resume_flow_run

    if not reason.strip():
        raise ValueError("say why (--reason): the answer is kept in the rollout record and its Git commit")
    with get_client(sync_client=True) as client:
        paused = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["rollout", "rollback"])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))))
    chosen = [r for r in paused if run in (None, str(r.id), r.name)]
    if len(chosen) != 1:
        names = ", ".join(f"{r.name} ({r.id})" for r in paused) or "none"
        raise NoGateWaiting(f"{'no' if not chosen else 'more than one'} rollout run waits at a manual gate"
                            f"{f' named {run}' if run else ''}; paused now: {names}" +
                            ("" if run or len(chosen) < 2 else "; name one with --run"))
    resume_flow_run(chosen[0].id, run_input={"approve": approve, "reason": reason})
    return chosen[0].name


@task(name="rollout-report", **REMOTE)
def report(settings: Settings, record: RolloutRecord, noop: bool = False) -> dict:
    """The rollout in the Prefect UI (timeline picture, waves, MLflow links) and on disk (the
    timeline PNG under EDGEWAVE_HOME/rollouts); the result tagged on the version.

    `noop`: the version already runs everywhere and is in production: nothing was deployed.
    """
    from prefect.artifacts import create_markdown_artifact

    from edgewave.tasks.rollout.timeline import render

    rows = summary(record)
    if noop:
        return {"rollout_id": record.id, "kind": record.kind, "version": record.version, "status": "noop",
                "reason": record.reason, "waves": rows}
    timeline = render(record, settings.home / "rollouts" / f"{record.id}.png")
    links = registry.ui_links(settings, **{f"v{record.version}": record.version,
                                           f"v{record.from_version} (before)": record.from_version})
    key = record.model.lower().replace("_", "-")
    create_markdown_artifact(report_markdown(record, timeline.read_bytes(), links), key=f"rollout-{key}",
                             description=f"{headline(record)} ({record.id})"[:500])
    if record.status in ("rolled_back", "held"):
        registry.tag_version(settings, record.version, {"rollout_id": record.id, "rollout_result": record.status,
                                                        "rollout_kind": record.kind})
    registry.describe_version(settings, record.version, "Rollout", f"{headline(record)} (`{record.id}`)")
    return {"rollout_id": record.id, "kind": record.kind, "version": record.version, "status": record.status,
            "reason": record.reason, "waves": rows, "reasons": reasons(record), "judgement": judgement(record),
            "timeline": str(timeline)}
