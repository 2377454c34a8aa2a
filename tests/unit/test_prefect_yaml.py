from __future__ import annotations

import importlib
from pathlib import Path

import yaml
from prefect import Flow
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger

ROOT = Path(__file__).resolve().parents[2]


def test_every_deployment_points_at_a_flow_of_its_name_with_a_valid_schedule() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert "release" in deployments
    for name, deployment in deployments.items():
        module_path, attr = deployment["entrypoint"].split(":")
        module = importlib.import_module("edgewave." + module_path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, attr)
        assert isinstance(flow, Flow), f"{name}: {deployment['entrypoint']} is not a Prefect flow"
        for schedule in deployment.get("schedules", []):
            if "cron" in schedule:
                CronSchedule(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))
            else:
                IntervalSchedule(interval=schedule["interval"], timezone=schedule.get("timezone", "UTC"))
        for trigger in deployment.get("triggers", []):
            DeploymentEventTrigger.model_validate(trigger)
    weekly = deployments["release"]["schedules"][0]["cron"].split()
    assert weekly[2:] == ["*", "*", weekly[4]] and weekly[4] != "*", "release runs once a week"


def test_drift_events_trigger_retraining_with_the_event_in_its_parameters() -> None:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    deployments = {d["name"]: d for d in spec["deployments"]}
    assert deployments["drift-monitor"]["schedules"][0]["interval"] > 0
    (trigger,) = deployments["retrain-on-drift"]["triggers"]
    parsed = DeploymentEventTrigger.model_validate(trigger)
    assert parsed.expect == {"edgewave.drift.detected"}
    from edgewave.flows.retrain import retrain_on_drift

    assert set(parsed.parameters) <= set(retrain_on_drift.parameters.properties)


def test_flow_parameters_are_what_a_person_chooses_never_settings() -> None:
    """Settings (paths, URLs, maybe credentials) come from the worker's environment; a flow-run's
    parameters are stored by Prefect and shown in its UI form."""
    from edgewave.flows import drift, release, retrain, rollout

    flows = [release.release, rollout.rollout, rollout.rollback, drift.drift_monitor, drift.check_sites,
             retrain.retrain_on_drift]
    for flow in flows:
        names = set(flow.parameters.properties)
        assert not names & {"settings", "config"}, f"{flow.name} takes settings as a parameter: {sorted(names)}"
    assert set(rollout.rollout.parameters.properties) == {"version", "reason", "wait"}
    assert set(rollout.rollback.parameters.properties) == {"to", "reason", "wait"}


def test_every_deployed_form_explains_its_fields_and_offers_no_way_past_the_gate() -> None:
    """A person fills these forms in the Prefect UI: each field says what it does, and the release's
    form has no switch that trains a broken model or stages one the gate rejected (the demo reaches
    those through `release_for_demo`, which no deployment runs)."""
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    for deployment in spec["deployments"]:
        module_path, attr = deployment["entrypoint"].split(":")
        flow = getattr(importlib.import_module("edgewave." + module_path.removesuffix(".py").replace("/", ".")), attr)
        for name, field in flow.parameters.properties.items():
            assert field.get("description"), f"{deployment['name']}: parameter {name!r} has no description"
        assert deployment["entrypoint"] != "flows/release.py:release_for_demo"
    from edgewave.flows.release import release, release_for_demo

    assert set(release.parameters.properties) == {"with_feedback"}
    assert {"shuffle_labels", "force"} <= set(release_for_demo.parameters.properties)
    from edgewave.flows.rollout import rollout

    assert "@staging" in rollout.parameters.properties["version"]["description"]


def test_the_rollout_forms_name_the_versions_as_they_stand() -> None:
    from edgewave.tasks.release.steps import form_notes

    rollout, rollback = form_notes(staging=5, production=4, previous=3)
    assert rollout == "@staging v5, @production v4, @previous v3. The form offers @staging."
    assert rollback == "@production v4; an empty `to` returns the fleet to @previous v3."
    rollout, rollback = form_notes(staging=4, production=4, previous=3)
    assert rollout.startswith("@staging v4 is already @production: nothing new to roll out")
    rollout, rollback = form_notes(staging=1, production=None, previous=None)
    assert "no @production" in rollout and rollback == "no @production; no @previous: name a version in `to`."
