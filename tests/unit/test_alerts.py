"""The fleet's alert rules: the shipped file is what `edgewave fleet alert-rules` generates for
the example fleet, Prometheus's own promtool accepts it, and its unit tests
(deployments/prometheus/alerts.test.yml: each alert fires when it must and not before) pass."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from edgewave.tasks.rollout.policy import FleetFile, load_fleet_file
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
