"""`edgewave release` twice on embedded defaults, then `edgewave status --json`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from edgewave.serving.bundle import load_trusted_keys, verify_bundle
from tests.helpers import BIN, edgewave_env


def edgewave(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in edgewave_env(home).items() if k != "DOCKER_HOST"}  # no engine: the image step skips
    return subprocess.run([str(BIN / "edgewave"), *args], env=env, capture_output=True, text=True, timeout=600)


def test_two_releases_register_two_versions_judged_against_each_other(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = edgewave(home, "release", "--seed", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {"model": "machine-failure", "version": 1, "staged": True}
    assert "gate PASSED" in first.stderr and "first model" in first.stderr

    second = edgewave(home, "release", "--seed", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout.strip().splitlines()[-1])["version"] == 2
    assert "of v1 (@staging) on the same held-out data" in second.stderr

    status = edgewave(home, "status", "--json")
    assert status.returncode == 0, status.stderr
    registry = json.loads(status.stdout)["registry"]
    versions = {v["version"]: v for v in registry["versions"]}
    assert set(versions) == {1, 2}
    assert registry["aliases"]["candidate"] == 2
    assert "candidate" in versions[2]["aliases"]
    assert versions[2]["tags"]["gate.baseline_version"] == "1"
    for v in versions.values():
        tags = v["tags"]
        assert {"onnx_sha256", "parity_max_abs_diff", "metrics", "data_fingerprint", "bundle_url"} <= set(tags)
        assert float(tags["parity_max_abs_diff"]) <= 1e-4
        assert tags["data_fingerprint"] != ""
    assert versions[1]["tags"]["data_fingerprint"] != versions[2]["tags"]["data_fingerprint"]

    # What the registry points at is a bundle the edge accepts.
    bundle_dir = Path(versions[2]["tags"]["bundle_url"].removeprefix("file://"))
    manifest = verify_bundle(bundle_dir, load_trusted_keys(home / "keys"))
    assert manifest.version == 2 and manifest.name == "machine-failure"

    # No Docker engine: the image step wrote the build context, said why it skipped, recorded no image.
    context = home / "images" / "machine-failure-v2" / "context"
    assert (context / "Dockerfile").exists() and (context / "bundle" / "bundle.json").exists()
    assert any(context.glob("wheelhouse/edgewave-*.whl")) and any(context.glob("keys/*.pub"))
    assert "serving image of v2 skipped: no Docker engine configured" in second.stderr
    assert "image" not in versions[2]["tags"]

    # One parent MLflow run per release, its trials as children, each with the span it really took.
    from mlflow import MlflowClient

    mlc = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    experiment = mlc.get_experiment_by_name("edgewave-release")
    runs = mlc.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("edgewave.role") == "release"]
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    for parent in parents:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert {c.data.tags["edgewave.family"] for c in children} >= {"sklearn", "torch"}, children
        assert all(parent.info.start_time <= c.info.start_time < c.info.end_time <= parent.info.end_time
                   for c in children), "each trial's span lies inside its release's"
        assert parent.info.end_time - parent.info.start_time >= 2000, "the release's real duration, not 1 s"
    assert len(runs) == sum(1 + sum(r.data.tags.get("mlflow.parentRunId") == p.info.run_id for r in runs)
                            for p in parents), "no run outside a release"

    # Everything stayed under EDGEWAVE_HOME.
    assert {p.name for p in home.iterdir()} >= {"mlflow.db", "mlartifacts", "bundles", "keys", "prefect"}


def test_bad_settings_fail_before_anything_runs(tmp_path: Path) -> None:
    result = subprocess.run([str(BIN / "edgewave"), "release"],
                            env=edgewave_env(tmp_path / "home", EDGEWAVE_GATE_TOLERANCE="lots"),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "gate_tolerance" in result.stderr
    assert not (tmp_path / "home" / "mlflow.db").exists()


def test_a_model_below_the_floor_is_rejected_tagged_and_not_staged(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = edgewave_env(home, EDGEWAVE_GATE_FLOOR_PR_AUC="0.999")
    result = subprocess.run([str(BIN / "edgewave"), "release", "--seed", "3"], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"model": "machine-failure", "version": 1, "staged": False}
    assert "REJECTED" in result.stderr and "misses the floor 0.9990" in result.stderr
    registry = json.loads(edgewave(home, "status", "--json").stdout)["registry"]
    assert registry["aliases"] == {"candidate": 1}
    assert registry["versions"][0]["tags"]["gate.passed"] == "False"
    description = registry["versions"][0]["description"]
    assert description.startswith("**Release**: "), description  # which runs (Prefect, MLflow) made it
    assert "\n\n**Gate**: REJECTED: " in description and "misses the floor 0.9990" in description, description
