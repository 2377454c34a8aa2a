"""Prometheus scrape configuration for a fleet: one target per site, labelled with its id.

The rollout's PromQL path (EDGEWAVE_PROMETHEUS_URL) finds sites by that `site` label.
"""

from __future__ import annotations

from urllib.parse import urlparse

from edgewave.tasks.rollout.policy import Fleet

# The one job name of site targets: the scrape config below, the rollout's PromQL, and on
# Kubernetes the ServiceMonitor (whose job label is the Service's name, `edgewave-site`).
JOB = "edgewave-site"


def scrape_config(fleet: Fleet, interval_seconds: float = 5.0) -> dict:
    """A prometheus.yml (as a dict) scraping every site's /metrics."""
    static = []
    for site in fleet.sites:
        url = urlparse(site.scrape_url)
        static.append({"targets": [url.netloc],
                       "labels": {"site": site.id, "__metrics_path__": url.path or "/metrics",
                                  **{f"site_{k}": v for k, v in site.labels.items()}}})
    interval = f"{max(1, round(interval_seconds * 1000))}ms"  # Prometheus durations take no fractions
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [{"job_name": JOB, "scrape_interval": interval, "scrape_timeout": interval,
                                "static_configs": static}]}
