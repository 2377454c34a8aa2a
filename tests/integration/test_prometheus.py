"""The rollout's PromQL path against a real Prometheus (Debian's package) scraping real sites."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from edgewave.tasks.rollout.controller import scrape_sites
from edgewave.tasks.rollout.policy import Fleet
from edgewave.tasks.rollout.prometheus import scrape_config
from edgewave.tasks.rollout.telemetry import prometheus_readings
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import ai4i_traffic, free_port, running_prometheus, start_site, stop, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus is not installed here (scripts/setup-system.sh could not install it)")


def test_promql_readings_equal_direct_scrapes(bundles, tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    fleet = Fleet.model_validate({"sites": [{"id": f"site-{i}", "port": p, "labels": {"line": str(i)}}
                                            for i, p in enumerate(ports)]})
    sites = [start_site(bundles.home, ports[i], tmp_path / f"site-{i}.log", "--bundle", str(b))
             for i, b in enumerate((bundles.v1, bundles.v2))]  # site-2 stays down on purpose
    try:
        with running_prometheus(scrape_config(fleet, interval_seconds=0.5), tmp_path) as url:
            with Traffic(fleet.sites[:2], ai4i_traffic(), rate_per_site=40):
                time.sleep(3)
            time.sleep(2)  # at least two scrapes after the last request
            ids = [s.id for s in fleet.sites]
            wait_for(lambda: all(prometheus_readings(url, ids)[s] is not None for s in ids[:2]), 30, "both sites scraped")
            via_prometheus = prometheus_readings(url, ids)
            direct = scrape_sites(fleet.sites)
            assert via_prometheus["site-2"] is None and direct["site-2"] is None, "a down site reads as None"
            for site in ids[:2]:
                p, d = via_prometheus[site], direct[site]
                assert p.version == d.version and p.version in (1, 2)
                assert p.ok == d.ok > 50
                assert p.rows == d.rows and p.failures_predicted == d.failures_predicted
                assert p.confidence_count == d.confidence_count
                assert p.latency_buckets == d.latency_buckets
            assert {via_prometheus["site-0"].version, via_prometheus["site-1"].version} == {1, 2}
    finally:
        for process in sites:
            stop(process)
