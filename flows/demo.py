"""The whole loop on a laptop: release → local fleet → traffic → rollout → two sites drift →
drift check finds them → retraining (the drift event's hop, in-process here) → rollout of the
retrained model; and the rollback demo.

Composition only: every step is a flow or a function from tasks/. Both demos leave the Git
desired state and the registry behind for `edgewave status`; the fleet is stopped at the end
unless asked to stay up.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from edgewave.flows.drift import drift_monitor
from edgewave.flows.release import release, release_for_demo
from edgewave.flows.retrain import retrain_on_drift
from edgewave.flows.rollout import result_of, rollout
from edgewave.tasks.drift.checks import FleetDrift
from edgewave.tasks.fleet import local
from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.platform.monitoring import MonitoringStore
from edgewave.tasks.platform.settings import Settings, use
from edgewave.tasks.release.registry import PRODUCTION, alias_version
from edgewave.tasks.rollout.telemetry import scrape_sites
from edgewave.tasks.sim.traffic import ReferenceRows, Traffic, source_for

# Sites sync every 2 s and keep every request for drift in 5 s windows, so a demo sees a
# drift check's worth of rows (500) within half a minute.
DEMO_SITE_ENV = {"EDGEWAVE_SYNC_INTERVAL_SECONDS": "2", "EDGEWAVE_SAMPLE_FRACTION": "1.0",
                 "EDGEWAVE_SAMPLE_WINDOW_SECONDS": "5"}
# The two sites (fleet order: 3rd and 5th) that drift after the first rollout, through the
# two scenarios the dataset's simulated machine names for demos.
DRIFTING_SITES = (2, 4)


class Phases:
    """How long each part of a demo took: said as each ends, and returned with the result, so a
    person sees where the minutes go (and `bench/firstrun.py` records them)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.seconds[name] = round(time.monotonic() - started, 1)
            print(f"[{name}: {self.seconds[name]:.1f} s]")


def _warm_up_drift_checks() -> None:
    """Import Evidently on the idle core while the first rollout waits on its sites: the drift
    checks that follow run in this process and would otherwise pay the import (~5 s) first."""
    threading.Thread(target=importlib.import_module, args=("evidently.presets",), daemon=True,
                     name="import-evidently").start()


def _with_fleet(settings: Settings, keep_fleet: bool, rate: float, work: Callable[[Traffic], dict],
                version: int | None = None, phase: Phases | None = None) -> dict:
    """Run `work` with the fleet up and traffic flowing: the dataset's simulated machine with its
    outcomes as feedback, or (a plant's own data) the reference rows of `version`'s bundle."""
    phase = phase or Phases()
    fleet_file = load_fleet_file(settings.fleet_path)
    source = source_for(settings, version)
    feedback = MonitoringStore.of(settings) if source.target else None
    with phase("fleet up"):
        local.up(settings, fleet_file.fleet, extra_env=DEMO_SITE_ENV)
    try:
        with Traffic(fleet_file.fleet.sites, source, rate_per_site=rate, feedback_store=feedback) as traffic:
            return work(traffic)
    finally:
        if not keep_fleet:
            with phase("fleet down"):
                local.down(settings, fleet_file.fleet)


def served_versions(settings: Settings) -> dict[str, int | None]:
    readings = scrape_sites(load_fleet_file(settings.fleet_path).fleet.sites, settings.fleet_identity())
    return {site: reading.version if reading else None for site, reading in readings.items()}


def _rollout_and_look(settings: Settings, version: int) -> dict:
    """Run the rollout flow, then read which version every site ended up serving."""
    result = result_of(rollout(version, return_state=True))
    result["served"] = served_versions(settings)
    return result


def watch_for_drift(max_checks: int = 8, pause: float = 20.0) -> FleetDrift:
    """Run the drift-monitor flow every `pause` seconds until the policy fires (or `max_checks`
    checks passed). The first check waits too: right after the change the sites have not sent
    a check's worth of new rows yet."""
    for _ in range(max_checks):
        time.sleep(pause)
        summary = drift_monitor()
        if summary.detected:
            break
    return summary


def pause_between_checks(settings: Settings, rate: float) -> float:
    """Long enough for each site to serve the policy's minimum of new rows and ship them: the
    window they fall in closes, and the agent's next sync uploads it."""
    policy = load_fleet_file(settings.fleet_path).drift
    return (policy.min_samples / max(rate, 0.1) + 2 * float(DEMO_SITE_ENV["EDGEWAVE_SAMPLE_WINDOW_SECONDS"])
            + float(DEMO_SITE_ENV["EDGEWAVE_SYNC_INTERVAL_SECONDS"]))


def _drift_and_retrain(settings: Settings, traffic: Traffic, phase: Phases, rate: float) -> dict:
    """Two sites drift; the drift flow must find them and the retrained model must roll out."""
    with phase("drift check before the drift"):
        baseline = drift_monitor()  # counts the pre-drift windows: no site may be flagged by them
    print(f"before the drift: {baseline.reason}")
    source = traffic.source
    if isinstance(source, ReferenceRows):  # the caller checked `can_drift`
        raise ValueError("a bundle's reference rows cannot drift")
    for index, change in zip(DRIFTING_SITES, source.demo_changes(), strict=True):
        traffic.set_scenario(traffic.sites[index].id, change)
        print(f"{traffic.sites[index].id}: now {change.description}")
    with phase("drift checks until found"):
        summary = watch_for_drift(pause=pause_between_checks(settings, rate))
    print(f"drift check {summary.check_id}: {summary.reason}; top features {summary.top_features}")
    if not summary.detected:
        return {"baseline": baseline.model_dump(), "drift": summary.model_dump(), "retrain": None}
    # Under `make up` the drift event starts retrain-on-drift through the deployment trigger;
    # without a server the demo takes that hop itself, with the parameters the trigger passes.
    with phase("retrain and roll out"):
        retrained = retrain_on_drift(model=summary.model, sites=summary.sites_confirmed, reason=summary.reason,
                                     drift_event=summary.event_id or "")
    if retrained["rollout"]:
        retrained["rollout"]["served"] = served_versions(settings)
    return {"baseline": baseline.model_dump(), "drift": summary.model_dump(), "retrain": retrained}


def loop(settings: Settings, keep_fleet: bool = False, rate: float = 20.0, drift: bool = True) -> dict:
    """Release → rollout; then (with `drift`) two sites drift, are found, and retraining rolls out.
    The result's `phases` say how long each part took."""
    phase = Phases()
    with phase("release"):
        released = release()
    print(f"released {released.model} v{released.version}: {'staged' if released.staged else 'rejected'} "
          f"({released.gate_reason})")
    if not released.staged:
        return {"release": released.model_dump(), "rollout": None, "phases": phase.seconds}

    def work(traffic: Traffic) -> dict:
        if drift:
            _warm_up_drift_checks()
        with phase("rollout"):
            rolled = _rollout_and_look(settings, released.version)
        result = {"release": released.model_dump(), "rollout": rolled}
        if drift and not traffic.source.can_drift:
            print("this dataset names no simulated machine (generator:), so there is no drift to show")
        elif drift and rolled["status"] == "succeeded":
            # in this process: the sites and the traffic need the other core
            with use(settings.model_copy(update={"drift_workers": 1})):
                result.update(_drift_and_retrain(settings, traffic, phase, rate))
        return result

    result = _with_fleet(settings, keep_fleet, rate, work, released.version, phase)
    return {**result, "phases": phase.seconds}


def bad_rollout(settings: Settings, keep_fleet: bool = False, rate: float = 20.0) -> dict:
    """A model trained on shuffled labels, forced past the gate, rolled out: the canary must
    catch it and every touched site must return to production."""
    if alias_version(settings, PRODUCTION) is None:
        print("no model in production yet: running the loop first")
        loop(settings, keep_fleet=True, rate=rate, drift=False)
    bad = release_for_demo(shuffle_labels=True, force=True)
    print(f"bad model v{bad.version} forced to @staging ({bad.gate_reason})")

    result = _with_fleet(settings, keep_fleet, rate, lambda _traffic: _rollout_and_look(settings, bad.version))
    result["bad_version"] = bad.version
    result["production"] = alias_version(settings, PRODUCTION)
    return result
