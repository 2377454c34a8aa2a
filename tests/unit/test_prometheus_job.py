"""One job name for site targets everywhere: the scrape config edgewave writes, the rollout's
PromQL and, on Kubernetes, the job label the Prometheus Operator gives a ServiceMonitor's series
(the `jobLabel` label of the Service if set, else the Service's name). A mismatch makes every
Kubernetes site read as absent."""

from __future__ import annotations

import inspect
from pathlib import Path

import yaml

from edgewave.tasks.platform.fleetfile import Fleet
from edgewave.tasks.rollout.prometheus import JOB, scrape_config
from edgewave.tasks.rollout.telemetry import prometheus_readings

K8S = Path(__file__).resolve().parents[2] / "k8s"


def operator_job_name() -> str:
    """The job label of the ServiceMonitor's series, as the Prometheus Operator derives it."""
    monitor = yaml.safe_load((K8S / "examples" / "servicemonitor.yaml").read_text())
    service = yaml.safe_load((K8S / "base" / "service.yaml").read_text())
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    labels = dict(service["metadata"].get("labels") or {})
    for block in kustomization.get("labels", []):
        labels.update(block["pairs"])
    selected = monitor["spec"]["selector"]["matchLabels"]
    assert all(labels.get(k) == v for k, v in selected.items()), "the ServiceMonitor selects the site Service"
    job_label = monitor["spec"].get("jobLabel")
    if job_label and job_label in labels:
        return labels[job_label]
    return kustomization.get("namePrefix", "") + service["metadata"]["name"] + kustomization.get("nameSuffix", "")


def test_the_servicemonitor_the_scrape_config_and_the_queries_use_one_job_name() -> None:
    fleet = Fleet.model_validate({"sites": [{"id": "site-0", "port": 9000}]})
    assert [c["job_name"] for c in scrape_config(fleet)["scrape_configs"]] == [JOB]
    assert inspect.signature(prometheus_readings).parameters["job"].default == JOB
    assert operator_job_name() == JOB
