"""Prometheus configuration for a fleet: one scrape target per site, labelled with its id, the
control plane's exporter, and the fleet's alert rules.

The rollout's PromQL path (EDGEWAVE_PROMETHEUS_URL) finds sites by that `site` label. The
alert rules are generated from the fleet file (the agent-offline alert waits as long as the
rollout policy waits for an unreachable site); deployments/prometheus/alerts.yml is this
output for the example fleet, and a test keeps the two equal.
"""

from __future__ import annotations

from urllib.parse import urlparse

from edgewave.tasks.platform.fleetfile import Fleet, FleetFile

# The one job name of site targets: the scrape config below, the rollout's PromQL, and on
# Kubernetes the ServiceMonitor (whose job label is the Service's name, `edgewave-site`).
JOB = "edgewave-site"
CONTROL_PLANE_JOB = "edgewave-control-plane"  # `edgewave exporter` (tasks/platform/exporter.py)
OUT_OF_RANGE_SURGE = 0.05  # out-of-range values per scored row: a sensor or a process left its training range


def scrape_config(fleet: Fleet, interval_seconds: float = 5.0, exporter: str | None = None,
                  rule_files: list[str] | None = None) -> dict:
    """A prometheus.yml (as a dict) scraping every site's /metrics, and the control plane's
    exporter at `exporter` (host:port) when given."""
    static = []
    for site in fleet.sites:
        for pod, target in site.scrape_targets.items():
            url = urlparse(target)
            static.append({"targets": [url.netloc],
                           "labels": {"site": site.id, "__metrics_path__": url.path or "/metrics",
                                      **({"pod": pod} if pod else {}),
                                      **{f"site_{k}": v for k, v in site.labels.items()}}})
    interval = f"{max(1, round(interval_seconds * 1000))}ms"  # Prometheus durations take no fractions
    jobs = [{"job_name": JOB, "scrape_interval": interval, "scrape_timeout": interval, "static_configs": static}]
    if exporter:
        jobs.append({"job_name": CONTROL_PLANE_JOB, "scrape_interval": interval, "scrape_timeout": interval,
                     "static_configs": [{"targets": [exporter]}]})
    config = {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": jobs}
    if rule_files:
        config["rule_files"] = rule_files
    return config


def agent_config(fleet: Fleet, remote_write: str, interval_seconds: float = 5.0, plant: str | None = None,
                 max_backoff_seconds: float = 5.0) -> dict:
    """A prometheus.yml for a plant's Prometheus in agent mode (`prometheus --agent`): it scrapes
    the plant's sites (or pods) as `scrape_config` does and remote-writes every sample to the
    central Prometheus at `remote_write` (…/api/v1/write, receiver enabled). While the link is
    down the agent keeps samples in its write-ahead log and sends them once it is back, so the
    central Prometheus has no gap; `plant` becomes an external label of every sample."""
    config = scrape_config(fleet, interval_seconds)
    del config["global"]["evaluation_interval"]  # an agent evaluates no rules
    if plant:
        config["global"]["external_labels"] = {"plant": plant}
    config["remote_write"] = [{"url": remote_write, "queue_config": {
        "min_backoff": "100ms", "max_backoff": f"{max(1, round(max_backoff_seconds * 1000))}ms"}}]
    return config


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds))}s"


def alert_rules(fleet_file: FleetFile) -> dict:
    """The fleet's alerting rules (a Prometheus rule file as a dict)."""
    site = f'job="{JOB}"'
    offline = fleet_file.rollout.offline.deadline_seconds

    def rule(name: str, expr: str, wait: str, severity: str, summary: str) -> dict:
        return {"alert": name, "expr": expr, "for": wait, "labels": {"severity": severity},
                "annotations": {"summary": summary}}

    return {"groups": [{"name": "edgewave-fleet", "rules": [
        rule("EdgewaveSiteDown", f"up{{{site}}} == 0", "2m", "critical",
             "site {{ $labels.site }} does not answer scrapes"),
        rule("EdgewaveAgentOffline", f"edgewave_agent_offline{{{site}}} == 1", _duration(offline), "warning",
             "the agent of {{ $labels.site }} cannot reach the desired-state remote or the monitoring store "
             f"(longer than the rollout policy waits for a site: {offline:g} s)"),
        rule("EdgewaveModelLoadFailed",
             f'increase(edgewave_model_load_failures_total{{{site},reason="ModelLoadError"}}[10m]) > 0', "0s",
             "warning", "{{ $labels.site }} could not load a verified bundle's model; it serves the one before"),
        rule("EdgewaveBundleRefused",
             f'increase(edgewave_agent_errors_total{{{site},kind=~"bundle_refused|downgrade_refused"}}[10m]) > 0',
             "0s", "critical", "{{ $labels.site }} refused the bundle its desired state names ({{ $labels.kind }})"),
        rule("EdgewaveOutOfRangeSurge",
             f"sum by (site) (rate(edgewave_out_of_range_values_total{{{site}}}[5m])) / "
             f"sum by (site) (rate(edgewave_predicted_rows_total{{{site}}}[5m])) > {OUT_OF_RANGE_SURGE:g}",
             "10m", "warning", "{{ $labels.site }}: {{ $value | humanizePercentage }} of scored rows carry a value "
             "outside the training range"),
        rule("EdgewaveDriftConfirmed", f'edgewave_drift_site_confirmed{{job="{CONTROL_PLANE_JOB}"}} == 1', "0s",
             "warning", "drift confirmed at {{ $labels.site }} for {{ $labels.model }}"),
        rule("EdgewaveRolloutHeld", f'edgewave_rollout_status{{job="{CONTROL_PLANE_JOB}",status="held"}} == 1',
             "0s", "critical", "{{ $labels.kind }} {{ $labels.rollout_id }} of {{ $labels.model }} is held: "
             "a person must look"),
    ]}]}


def alert_rules_yaml(fleet_file: FleetFile) -> str:
    """The rule file as written to deployments/prometheus/alerts.yml."""
    import yaml

    header = ("# Generated by `edgewave fleet alert-rules` from deployments/fleet.yaml; regenerate it for your\n"
              "# fleet file. Checked by `promtool check rules`, tested by alerts.test.yml (`promtool test rules`).\n")
    return header + yaml.safe_dump(alert_rules(fleet_file), sort_keys=False, width=120)
