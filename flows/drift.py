"""The drift-monitor flow: per-site Evidently checks mapped over the fleet → fleet summary →
reports in MLflow and a Prefect artifact → `edgewave.drift.detected` when the policy says so."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prefect import flow, unmapped
from prefect.task_runners import ProcessPoolTaskRunner, TaskRunner, ThreadPoolTaskRunner

from edgewave.serving.redact import redact
from edgewave.tasks.drift import steps
from edgewave.tasks.drift.checks import FleetDrift, SiteCheck
from edgewave.tasks.platform.fleetfile import DriftPolicy, load_fleet_file
from edgewave.tasks.platform.runs import name_run, retried, run_logger
from edgewave.tasks.platform.settings import Settings, active


@flow(name="drift-check-sites", flow_run_name="{check_id}: per-site checks")
def check_sites(policy: DriftPolicy, check_id: str, sites: list[str]) -> list[SiteCheck]:
    """The fan-out: one task per site on whatever task runner this flow was given."""
    futures = steps.check_site.map(unmapped(active()), unmapped(policy), unmapped(check_id), sites)
    return [future.result() for future in futures]


def task_runner(settings: Settings) -> TaskRunner[Any]:
    """A process per core here; `EDGEWAVE_DASK_ADDRESS` sends the same tasks to a Dask cluster.

    With one worker the checks run in this process, one after another: a fresh worker process
    would import pandas, scipy and Evidently again for every check (about 10 s on this machine),
    while this process keeps them from the first check on."""
    if settings.dask_address:
        from prefect_dask.task_runners import DaskTaskRunner

        return DaskTaskRunner(address=settings.dask_address)
    if settings.drift_workers == 1:
        return ThreadPoolTaskRunner(max_workers=1)
    return ProcessPoolTaskRunner(max_workers=settings.drift_workers or os.cpu_count() or 1)


def same_api_for_workers() -> AbstractContextManager:
    """Pin the API URL while tasks run in other processes.

    Without a Prefect server (`make run`) this process runs a temporary API; process-pool
    workers would each start their own (seconds each, and left running) unless the URL is
    set in the settings that Prefect hands them.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        return nullcontext()
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()
    return temporary_settings(updates={PREFECT_API_URL: server.api_url}) if server.running else nullcontext()


@flow(name="drift-monitor", log_prints=True, flow_run_name="drift check")
def drift_monitor() -> FleetDrift:
    """Check every site's new sample windows against its model's training reference."""
    settings = active()
    log = run_logger()
    fleet_file = load_fleet_file(settings.fleet_path)
    policy = steps.policy_for(settings, fleet_file.drift)
    check_id = steps.new_check_id()
    sites = [s.id for s in fleet_file.fleet.sites]
    name_run(f"drift check {len(sites)} sites")
    log.info("%s: %d sites of %s, store %s", check_id, len(sites), settings.model_name, redact(settings.monitoring_store))

    with same_api_for_workers():
        checks = check_sites.with_options(task_runner=task_runner(settings))(policy, check_id, sites)
    summary = steps.summarise(settings, check_id, checks, policy)
    links = retried(steps.log_to_mlflow, settings)(settings, summary)
    steps.publish(summary, links)
    if summary.detected:
        summary = summary.model_copy(update={"event_id": steps.emit(settings, summary, links, policy.cooldown_minutes)})
    log.info("%s: %s", check_id, summary.reason)
    return summary
