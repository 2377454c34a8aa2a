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
from tasks.settings import Settings
from tasks.telemetry import scrape
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
    result: dict[str, int | None] = {}
    for site in load_fleet_file(settings.fleet_path).fleet.sites:
        try:
            result[site.id] = scrape(site.scrape_url).version
        except OSError:
            result[site.id] = None
    return result


def loop(settings: Settings, keep_fleet: bool = False, rate: float = 20.0) -> dict:
    """Release a new version and, when it passes the gate, roll it out to the local fleet."""
    released = release(settings)
    print(f"released {released.model} v{released.version}: {'staged' if released.staged else 'rejected'} "
          f"({released.gate_reason})")
    if not released.staged:
        return {"release": released.model_dump(), "rollout": None}

    def roll() -> dict:
        result = rollout(released.version, settings)
        result["served"] = served_versions(settings)
        return result

    return {"release": released.model_dump(), "rollout": _with_fleet(settings, keep_fleet, rate, roll)}


def bad_rollout(settings: Settings, keep_fleet: bool = False, rate: float = 20.0) -> dict:
    """A model trained on shuffled labels, forced past the gate, rolled out: the canary must
    catch it and every touched site must return to production."""
    if alias_version(settings, PRODUCTION) is None:
        print("no model in production yet: running the loop first")
        loop(settings, keep_fleet=True, rate=rate)
    bad = release(settings, shuffle_labels=True, force=True)
    print(f"bad model v{bad.version} forced to @staging ({bad.gate_reason})")

    def roll() -> dict:
        result = rollout(bad.version, settings)
        result["served"] = served_versions(settings)
        return result

    result = _with_fleet(settings, keep_fleet, rate, roll)
    result["bad_version"] = bad.version
    result["production"] = alias_version(settings, PRODUCTION)
    return result
