"""The fleet's alert rules: the shipped file is what `edgewave fleet alert-rules` generates for
the example fleet, Prometheus's own promtool accepts it, and its unit tests
(deployments/prometheus/alerts.test.yml: each alert fires when it must and not before) pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgewave.tasks.platform.fleetfile import FleetFile, load_fleet_file
from edgewave.tasks.rollout.prometheus import alert_rules, alert_rules_yaml
from tests.helpers import DEPLOYMENTS

RULES = DEPLOYMENTS / "prometheus"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool comes with Debian's "
                                    "prometheus package, which scripts/setup-system.sh could not install here")


def test_the_shipped_rules_are_the_example_fleets_rules() -> None:
    assert (RULES / "alerts.yml").read_text() == alert_rules_yaml(load_fleet_file(DEPLOYMENTS / "fleet.yaml")), \
        "regenerate: edgewave fleet alert-rules > deployments/prometheus/alerts.yml"


def test_the_agent_offline_alert_waits_as_long_as_the_rollout_policy() -> None:
    example = load_fleet_file(DEPLOYMENTS / "fleet.yaml").model_dump()
    example["rollout"]["offline"]["deadline_seconds"] = 300
    fleet_file = FleetFile.model_validate(example)
    rules = {r["alert"]: r for r in alert_rules(fleet_file)["groups"][0]["rules"]}
    assert rules["EdgewaveAgentOffline"]["for"] == "300s"


@needs_promtool
def test_promtool_accepts_the_rules_and_their_unit_tests_pass() -> None:
    checked = subprocess.run(["promtool", "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 7 rules found" in checked.stdout
    tested = subprocess.run(["promtool", "test", "rules", "alerts.test.yml"], cwd=RULES, capture_output=True,
                            text=True)
    assert tested.returncode == 0, tested.stdout + tested.stderr


@needs_promtool
def test_promtool_accepts_the_plant_agent_configs(tmp_path) -> None:
    """The agent config `edgewave fleet prometheus-config --remote-write` prints, and the K3s
    example's (k8s/examples/prometheus-agent.yaml), are configs Prometheus loads."""
    import yaml

    from edgewave.tasks.rollout.prometheus import JOB, agent_config

    fleet = load_fleet_file(DEPLOYMENTS / "fleet.yaml").fleet
    generated = agent_config(fleet, "https://central.example:9090/api/v1/write", plant="plant-a")
    assert generated["global"]["external_labels"] == {"plant": "plant-a"} and "rule_files" not in generated
    manifests = yaml.safe_load_all((DEPLOYMENTS.parent / "k8s" / "examples" / "prometheus-agent.yaml").read_text())
    k3s = yaml.safe_load(next(d for d in manifests if d["kind"] == "ConfigMap")["data"]["prometheus.yml"])
    assert [job["job_name"] for job in k3s["scrape_configs"]] == [JOB], "one job name everywhere"
    # Debian's Prometheus is built without Kubernetes discovery ("field kubernetes_sd_configs not
    # found"): the discovery block is swapped for a static target, the rest (relabelling) is checked
    assert k3s["scrape_configs"][0].pop("kubernetes_sd_configs")[0]["role"] == "pod"
    k3s["scrape_configs"][0]["static_configs"] = [{"targets": ["pod.example:8080"]}]
    for name, config in (("generated", generated), ("k3s", k3s)):
        (tmp_path / f"{name}.yml").write_text(yaml.safe_dump(config))
        checked = subprocess.run(["promtool", "check", "config", f"{name}.yml"], cwd=tmp_path, capture_output=True,
                                 text=True)
        assert checked.returncode == 0, f"{name}: {checked.stdout}{checked.stderr}"
