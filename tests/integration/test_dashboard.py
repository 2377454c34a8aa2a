"""The Grafana dashboard (deployments/grafana/edgewave-fleet.json): Grafana cannot run here, so
every PromQL expression in it runs against a real Prometheus scraping a live local fleet (site
processes with their agents, serving traffic) and must return a series for every site."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from urllib.parse import urlencode

import pytest

from edgewave.serving.desired import DesiredState
from edgewave.tasks.fleet import local
from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.prometheus import JOB, scrape_config
from edgewave.tasks.rollout.telemetry import prometheus_readings
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import (
    ALL_AT_ONCE,
    DEPLOYMENTS,
    ai4i_traffic,
    free_port,
    running_prometheus,
    wait_for,
    write_fleet_file,
)

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus is not installed here (scripts/setup-system.sh could not install it)")

DASHBOARD = DEPLOYMENTS / "grafana" / "edgewave-fleet.json"
SITES = ["line-0", "line-1"]


def query(url: str, path: str, **params: str) -> list:
    with urllib.request.urlopen(f"{url}{path}?{urlencode(params)}", timeout=10) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"] if isinstance(body["data"], dict) else body["data"]


def expressions(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_every_dashboard_query_returns_a_series_per_site_of_a_live_fleet(bundles, tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = expressions(dashboard)
    assert len(panels) >= 15 and all(f'job="{JOB}"' in expr for _, expr in panels), "one job name everywhere"
    titles = " ".join(title.lower() for title, _ in panels)
    for needed in ("version", "requests", "p99", "confidence", "out-of-range", "agent offline", "buffered"):
        assert needed in titles, f"the fleet overview shows {needed}"

    home = tmp_path / "home"
    shutil.copytree(bundles.home / "keys", home / "keys", ignore=shutil.ignore_patterns("*.key"))
    settings = Settings(home=home, fleet_path=tmp_path / "fleet.yaml")
    write_fleet_file(settings.fleet_path, {s: free_port() for s in SITES}, ALL_AT_ONCE)
    fleet_file = load_fleet_file(settings.fleet_path)
    DesiredStateRepo.of(settings).ensure().commit(
        [DesiredState(site=s, model="machine-failure", version=1, bundle_url=bundles.v1.as_uri(),
                      sha256=bundles.sha(bundles.v1), rollout_id="ro-t") for s in SITES], "ro-t: wave 1/1")
    local.up(settings, fleet_file.fleet, extra_env={"EDGEWAVE_SYNC_INTERVAL_SECONDS": "0.5"})
    try:
        with running_prometheus(scrape_config(fleet_file.fleet, interval_seconds=0.5), tmp_path) as url:
            def on_v1() -> bool:
                readings = prometheus_readings(url, fleet_file.fleet.sites, settings.fleet_identity())
                return all(r is not None and r.version == 1 for r in readings.values())
            wait_for(on_v1, 60, "both sites serving v1, as Prometheus sees them")
            def shown() -> dict[str, set]:
                """Each panel's sites: a rate needs two scrapes of the traffic in its window."""
                found = {}
                for title, expr in panels:
                    promql = expr.replace("$__rate_interval", "30s").replace("$site", "|".join(SITES))
                    found[title] = {series["metric"].get("site") for series in query(url, "/api/v1/query", query=promql)}
                return found

            with Traffic(fleet_file.fleet.sites, ai4i_traffic(), rate_per_site=30):
                try:
                    wait_for(lambda: all(sites == set(SITES) for sites in shown().values()), 60,
                             "every panel to show every site")
                except TimeoutError:
                    pass  # the assertion below names the panels that do not

            choices = query(url, "/api/v1/label/site/values", **{"match[]": f'edgewave_model_version{{job="{JOB}"}}'})
            assert sorted(choices) == SITES, "the `site` variable lists every site"
            for title, sites in shown().items():
                assert sites == set(SITES), f"{title}: shows {sites}"
    finally:
        local.down(settings, fleet_file.fleet)
