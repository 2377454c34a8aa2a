"""The registry against a real MLflow (SQLite backend under a temporary home)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import registry
from edgewave.tasks.release import steps as step
from edgewave.tasks.release.export import Export
from edgewave.tasks.release.train import Split, TrainedModel
from tests.helpers import register_versions

ROOT = Path(__file__).resolve().parents[2]


def _log(settings: Settings, release_id: str, family: str, split: Split, trained: TrainedModel, parity: float) -> str:
    return registry.log_training_run(settings, release_id, family, trained.params, trained.metrics.as_dict(),
                                     split.data_fingerprint, parity)


def test_versions_aliases_tags_and_gate_through_real_mlflow(settings: Settings, split: Split,
                                                             trained: dict[str, TrainedModel],
                                                             exported: dict[str, Export]) -> None:
    sk = trained["sklearn"]
    run1 = _log(settings, "rel-1", "sklearn", split, sk, exported["sklearn"].parity_max_abs_diff)
    assert _log(settings, "rel-1", "sklearn", split, sk, 0.0) == run1, "a retried log must reuse the run"

    v1 = registry.register_candidate(settings, run1, exported["sklearn"].model, {"family": "sklearn"})
    assert v1.version == 1
    assert any(settings.artifact_root.rglob("*.onnx")), "embedded artifacts belong under EDGEWAVE_HOME"
    assert registry.register_candidate(settings, run1, exported["sklearn"].model, {}).version == 1, "retry registers twice"
    assert registry.baseline_version(settings, exclude=1) is None

    champion = step.Candidate(sk, exported["sklearn"])
    first = step.quality_gate.fn(settings, v1, champion, split)
    assert first.passed and first.baseline_version is None
    step.record_gate.fn(settings, v1, first)

    mlp = trained["torch"]
    run2 = _log(settings, "rel-2", "torch", split, mlp, exported["torch"].parity_max_abs_diff)
    v2 = registry.register_candidate(settings, run2, exported["torch"].model, {"family": "torch"})
    assert v2.version == 2

    alias, base = registry.baseline_version(settings, exclude=2)
    assert (alias, int(base.version)) == ("staging", 1)
    assert hashlib.sha256(registry.download_onnx(settings, base)).digest() == hashlib.sha256(exported["sklearn"].model).digest()

    second = step.quality_gate.fn(settings, v2, step.Candidate(mlp, exported["torch"]), split)
    assert second.baseline_version == 1 and second.baseline_alias == "staging"
    assert second.baseline_pr_auc == pytest.approx(sk.metrics.pr_auc, abs=1e-6), "baseline scored on the same held-out rows"

    rejected = second.__class__(False, "forced rejection", second.challenger_pr_auc, 1, "staging", second.baseline_pr_auc)
    step.record_gate.fn(settings, v2, rejected)

    state = registry.registry_state(settings)
    assert state["aliases"] == {"candidate": 2, "staging": 1}
    by_version = {v["version"]: v for v in state["versions"]}
    assert by_version[1]["aliases"] == ["staging"]
    assert by_version[2]["aliases"] == ["candidate"]
    assert by_version[2]["tags"]["gate.passed"] == "False"
    assert by_version[2]["tags"]["gate.reason"] == "forced rejection"
    assert by_version[1]["tags"]["family"] == "sklearn"


def test_empty_registry_state_is_readable(settings: Settings) -> None:
    state = registry.registry_state(settings)
    assert state["versions"] == [] and state["aliases"] == {}
    assert not (settings.home.parent / "mlruns").exists()


def test_a_release_of_another_kind_of_machine_under_the_same_model_name_fails_before_training(
        settings: Settings) -> None:
    from edgewave.tasks.data.ai4i import FEATURES
    from edgewave.tasks.data.spec import load_spec

    register_versions(settings, {1: {registry.INPUT_FEATURES: ",".join(FEATURES)}}, production=1)
    step.check_model_inputs.fn(settings)  # the milling spec: the same inputs, nothing to say
    pump = settings.model_copy(update={"dataset": ROOT / "deployments" / "pump-dataset.yaml"})
    with pytest.raises(ValueError, match=r"machine-failure @production \(v1\) takes \['air_temperature_k',.*the dataset "
                                         r"'centrifugal-pump' .* has \['flow_m3h',.*set EDGEWAVE_MODEL_NAME"):
        step.check_model_inputs.fn(pump)
    step.check_model_inputs.fn(pump.model_copy(update={"model_name": "pump-failure"}))
    assert load_spec(pump.dataset).features != FEATURES


def test_every_registry_call_against_a_server_that_does_not_answer_names_it(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whichever call of a release or rollout meets the outage first, the command ends in
    RegistryUnavailable naming the server (a refused connection once read as "the experiment was
    created meanwhile" and surfaced as MLflow's own exception)."""
    from edgewave.tasks.drift import steps as drift_steps
    from edgewave.tasks.drift.checks import FleetDrift
    from tests.helpers import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    down = settings.model_copy(update={"tracking_uri": f"http://{address}"})
    version = registry.RegisteredVersion(down.model_name, 1, "0" * 32)
    calls = {
        "ensure_experiment": lambda: registry.ensure_experiment(down),
        "log_training_run": lambda: registry.log_training_run(down, "rel-1", "sklearn", {}, {}, "f", 0.0),
        "register_candidate": lambda: registry.register_candidate(down, "0" * 32, b"", {}),
        "attach_bundle": lambda: registry.attach_bundle(down, version, settings.home, "file:///x"),
        "baseline_version": lambda: registry.baseline_version(down, exclude=0),
        "record_gate": lambda: registry.record_gate(down, version, {"gate.passed": "True"}, True),
        "registry_state": lambda: registry.registry_state(down),
        "alias_version": lambda: registry.alias_version(down, registry.STAGING),
        "rollout_target": lambda: registry.rollout_target(down, 1),
        "tag_version": lambda: registry.tag_version(down, 1, {"a": "b"}),
        "promote": lambda: registry.promote(down, 1),
        "describe_version": lambda: registry.describe_version(down, 1, "Gate", "PASSED"),
        "log_drift": lambda: drift_steps.log_to_mlflow.fn(down, FleetDrift.model_construct(check_id="c", sites=[])),
    }
    for name, call in calls.items():
        with pytest.raises(registry.RegistryUnavailable) as raised:
            call()
        assert f"MLflow at http://{address}" in str(raised.value), (name, raised.value)
