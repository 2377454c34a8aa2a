"""The rollout's PromQL path against a real Prometheus (Debian's package) scraping real sites."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from edgewave.tasks.platform.fleetfile import Abort, Fleet, RolloutPolicy, Site
from edgewave.tasks.rollout.analysis import measure
from edgewave.tasks.rollout.prometheus import scrape_config
from edgewave.tasks.rollout.telemetry import MIXED, prometheus_readings, scrape_sites, window
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import TEST_FLEET, ai4i_traffic, free_port, running_prometheus, start_site, stop, wait_for

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Debian's prometheus is not installed here (scripts/setup-system.sh could not install it)")


def serve(sites: list[Site], fleet_sites: list[Site], requests: int = 120) -> None:
    """Send traffic to `sites` until every one of `fleet_sites` that answers has served `requests` more."""
    start = {s: r.ok if r else 0.0 for s, r in scrape_sites(fleet_sites, TEST_FLEET).items()}

    def served() -> bool:
        now = scrape_sites(fleet_sites, TEST_FLEET)
        return all(r is None or r.ok - start[s] >= requests for s, r in now.items())
    with Traffic(sites, ai4i_traffic(), rate_per_site=40):
        wait_for(served, 60, f"{requests} more requests served by every site")


def scraped(url: str, sites: list[Site], fleet_sites: list[Site]) -> tuple[dict, dict]:
    """Prometheus' readings and the sites' own, once Prometheus has scraped what the sites last served
    (the traffic has stopped, so the sites' counters stand still)."""
    def caught_up() -> bool:
        direct = scrape_sites(fleet_sites, TEST_FLEET)
        return all(p is None or p == direct[s] for s, p in prometheus_readings(url, sites, TEST_FLEET).items())
    wait_for(caught_up, 30, "Prometheus to scrape the sites' last requests")
    return prometheus_readings(url, sites, TEST_FLEET), scrape_sites(fleet_sites, TEST_FLEET)


def test_promql_readings_equal_direct_scrapes(bundles, tmp_path: Path) -> None:
    ports = [free_port() for _ in range(3)]
    fleet = Fleet.model_validate({"sites": [{"id": f"site-{i}", "port": p, "labels": {"line": str(i)}}
                                            for i, p in enumerate(ports)]})
    processes = [start_site(bundles.home, ports[i], tmp_path / f"site-{i}.log", "--bundle", str(b), "--site", f"site-{i}")
                 for i, b in enumerate((bundles.v1, bundles.v2))]  # site-2 stays down on purpose
    try:
        with running_prometheus(scrape_config(fleet, interval_seconds=0.5), tmp_path) as url:
            serve(fleet.sites[:2], fleet.sites)
            ids, sites = [s.id for s in fleet.sites], fleet.sites
            wait_for(lambda: all(prometheus_readings(url, sites, TEST_FLEET)[s] is not None for s in ids[:2]), 30,
                     "both sites scraped")
            via_prometheus, direct = scraped(url, sites, fleet.sites)
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
        for process in processes:
            stop(process)


def test_a_site_of_two_pods_is_judged_on_their_sum_and_converges_only_when_both_serve_the_new_version(
        bundles, tmp_path: Path) -> None:
    """Two site processes labelled as two pods of `line-a`, one single-pod `line-b`: the PromQL path
    sums the pods as the pods' own scrapes summed do, pod by pod (a replaced pod counts from zero),
    and `line-a` reads as one version only once both pods serve it."""
    ports = {pod: free_port() for pod in ("line-a-0", "line-a-1", "line-b")}
    pods = {pod: f"http://127.0.0.1:{ports[pod]}/metrics" for pod in ("line-a-0", "line-a-1")}
    fleet = Fleet.model_validate({"sites": [
        {"id": "line-a", "metrics_url": pods["line-a-0"], "pod_metrics_urls": pods},
        {"id": "line-b", "port": ports["line-b"]}]})
    def site_of(pod: str) -> str:
        return pod.rsplit("-", 1)[0] if pod.startswith("line-a") else pod

    processes = {pod: start_site(bundles.home, port, tmp_path / f"{pod}.log", "--bundle", str(bundles.v1),
                                 "--site", site_of(pod)) for pod, port in ports.items()}
    each_process = [Site(id=pod, port=port) for pod, port in ports.items()]  # traffic reaches every pod
    ids, sites = ["line-a", "line-b"], fleet.sites
    rules, abort = RolloutPolicy.model_validate({"waves": [{"name": "all", "percent": 100}]}).analysis, Abort()

    def replace_pod(pod: str, bundle: Path) -> None:
        stop(processes[pod])
        processes[pod] = start_site(bundles.home, ports[pod], tmp_path / f"{pod}-v2.log", "--bundle", str(bundle),
                                    "--site", site_of(pod))

    def serve_and_read(url: str) -> tuple[dict, dict]:
        serve(each_process, fleet.sites)
        return scraped(url, sites, fleet.sites)

    try:
        with running_prometheus(scrape_config(fleet, interval_seconds=0.5), tmp_path) as url:
            config = (tmp_path / "prometheus.yml").read_text()
            assert "pod: line-a-0" in config and "pod: line-a-1" in config, "each pod is its own target"
            wait_for(lambda: all(prometheus_readings(url, sites, TEST_FLEET)[s] is not None for s in ids), 30, "every pod scraped")
            before_prom, before_direct = serve_and_read(url)
            assert before_prom == before_direct and before_prom["line-a"].version == 1
            assert [pod for pod, _ in before_prom["line-a"].pods] == ["line-a-0", "line-a-1"]

            replace_pod("line-a-1", bundles.v2)  # one pod of line-a on the new version, counters from zero
            wait_for(lambda: dict(prometheus_readings(url, sites, TEST_FLEET)["line-a"].pods)["line-a-1"].version == 2, 30,
                     "the new pod scraped")
            after_prom, after_direct = serve_and_read(url)
            assert after_prom == after_direct
            assert after_prom["line-a"].version == MIXED, "half the pods on v2 is not converged"

            canary = {s: window(before_prom[s], after_prom[s], s) for s in ["line-a"]}
            baseline = window(before_prom["line-b"], after_prom["line-b"], "line-b")
            by_prometheus = measure(canary, baseline, rules, abort)
            by_scrapes = measure({"line-a": window(before_direct["line-a"], after_direct["line-a"], "line-a")},
                                 window(before_direct["line-b"], after_direct["line-b"], "line-b"), rules, abort)
            assert (by_prometheus.verdict, by_prometheus.reason) == (by_scrapes.verdict, by_scrapes.reason)
            assert by_prometheus.verdict != "inconclusive", by_prometheus.reason
            # the window is per pod, summed: the replaced pod's reset does not drop line-a-0's requests
            per_pod = [window(dict(before_direct["line-a"].pods)[p], dict(after_direct["line-a"].pods)[p])
                       for p in pods]
            assert canary["line-a"].requests == sum(w.requests for w in per_pod) > 100

            replace_pod("line-a-0", bundles.v2)
            wait_for(lambda: prometheus_readings(url, sites, TEST_FLEET)["line-a"].version == 2, 30, "line-a converged on v2")
            assert scrape_sites(fleet.sites, TEST_FLEET)["line-a"].version == 2
    finally:
        for process in processes.values():
            stop(process)
