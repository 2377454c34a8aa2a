"""The whole loop on a laptop: release → local fleet → traffic → rollout, and the rollback demo.

Composition only: every step is a flow or a function from tasks/. Both demos leave the Git
desired state and the registry behind for `edgewave status`; the fleet is stopped at the end
unless asked to stay up.
"""

from __future__ import annotations

from collections.abc import Callable

from flows.release import release
from flows.rollout import rollout
from tasks import fleet
from tasks.policy import load_fleet_file
from tasks.registry import PRODUCTION, alias_version
from tasks.rollout import scrape_sites
from tasks.settings import Settings
from tasks.traffic import Traffic

DEMO_SITE_ENV = {"EDGEWAVE_SYNC_INTERVAL_SECONDS": "2"}


def _with_fleet(settings: Settings, keep_fleet: bool, rate: float, work: Callable[[], dict]) -> dict:
    fleet_file = load_fleet_file(settings.fleet_path)
    fleet.up(settings, fleet_file.fleet, extra_env=DEMO_SITE_ENV)
    try:
        with Traffic(fleet_file.fleet.sites, rate_per_site=rate):
            return work()
    finally:
        if not keep_fleet:
            fleet.down(settings, fleet_file.fleet)


def served_versions(settings: Settings) -> dict[str, int | None]:
    readings = scrape_sites(load_fleet_file(settings.fleet_path).fleet.sites)
    return {site: reading.version if reading else None for site, reading in readings.items()}


def _rollout_and_look(settings: Settings, version: int) -> dict:
    """Run the rollout flow, then read which version every site ended up serving."""
    result = rollout(version, settings)
    result["served"] = served_versions(settings)
    return result


def loop(settings: Settings, keep_fleet: bool = False, rate: float = 20.0) -> dict:
    """Release a new version and, when it passes the gate, roll it out to the local fleet."""
    released = release(settings)
    print(f"released {released.model} v{released.version}: {'staged' if released.staged else 'rejected'} "
          f"({released.gate_reason})")
    if not released.staged:
        return {"release": released.model_dump(), "rollout": None}

    rolled = _with_fleet(settings, keep_fleet, rate, lambda: _rollout_and_look(settings, released.version))
    return {"release": released.model_dump(), "rollout": rolled}


def bad_rollout(settings: Settings, keep_fleet: bool = False, rate: float = 20.0) -> dict:
    """A model trained on shuffled labels, forced past the gate, rolled out: the canary must
    catch it and every touched site must return to production."""
    if alias_version(settings, PRODUCTION) is None:
        print("no model in production yet: running the loop first")
        loop(settings, keep_fleet=True, rate=rate)
    bad = release(settings, shuffle_labels=True, force=True)
    print(f"bad model v{bad.version} forced to @staging ({bad.gate_reason})")

    result = _with_fleet(settings, keep_fleet, rate, lambda: _rollout_and_look(settings, bad.version))
    result["bad_version"] = bad.version
    result["production"] = alias_version(settings, PRODUCTION)
    return result
