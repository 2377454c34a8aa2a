"""Kubernetes sites: the kustomize base and the overlays the rollout writes render with
`kubectl kustomize` and pass `kubernetes-validate --strict` against a pinned Kubernetes; a
mixed fleet's rollout commits the K8s sites' overlays wave by wave in a real Git repo."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from edgewave.flows.rollout import result_of, rollout
from edgewave.serving.desired import DesiredState
from edgewave.tasks.platform.settings import Settings, use
from edgewave.tasks.rollout.gitops import git
from edgewave.tasks.rollout.k8s import image_fields, overlay_path
from tests.helpers import (
    BIN,
    TEST_FLEET,
    desired_repo,
    free_port,
    http_ok,
    register_versions,
    stop,
    wait_for,
    write_fleet_file,
)

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.32.0"  # what the manifests are validated against (K3s v1.32 line)
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl (for `kubectl kustomize`) is not installed; "
                                                        "scripts/setup-system.sh installs it")
SHA = "ab" * 32
DIGEST = "sha256:" + "cd" * 32


def render(folder: Path, out: Path) -> Path:
    result = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {folder}: {result.stderr}"
    out.write_text(result.stdout)
    return out


def validate(manifest: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--kubernetes-version", KUBERNETES_VERSION,
                           "--quiet", str(manifest)], capture_output=True, text=True, timeout=60)


def state(site: str, version: int, image: str | None, rollout: str = "ro-test") -> DesiredState:
    return DesiredState(site=site, model="machine-failure", version=version, bundle_url=f"file:///b/v{version}",
                        sha256=SHA, rollout_id=rollout, image=image, updated_at=datetime.now(UTC))


def test_the_base_renders_and_validates(tmp_path: Path) -> None:
    result = validate(render(ROOT / "k8s" / "base", tmp_path / "base.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_overlay_the_rollout_writes_renders_and_validates(tmp_path: Path) -> None:
    repo = desired_repo(tmp_path)
    repo.commit([state("press-1", 4, "127.0.0.1:5000/edgewave-serving:machine-failure-v4"),
                 state("press-2", 4, f"127.0.0.1:5000/edgewave-serving@{DIGEST}"),
                 state("bare-1", 4, None)], "wave 1")
    overlays = sorted((repo.path / "k8s" / "overlays").iterdir())
    assert [o.name for o in overlays] == ["press-1", "press-2"], "only Kubernetes sites get an overlay"
    for folder in overlays:
        manifest = render(folder, tmp_path / f"{folder.name}.yaml")
        result = validate(manifest)
        assert result.returncode == 0, result.stdout + result.stderr
        docs = {d["kind"]: d for d in yaml.safe_load_all(manifest.read_text())}
        assert docs["ConfigMap"]["data"]["EDGEWAVE_SITE_ID"] == folder.name
        assert docs["ConfigMap"]["data"]["EDGEWAVE_MODEL_VERSION"] == "4"
        pod = docs["Deployment"]["spec"]["template"]
        assert pod["metadata"]["labels"]["edgewave.io/model-version"] == "4"
        image = pod["spec"]["containers"][0]["image"]
        container = pod["spec"]["containers"][0]  # image-pinned: the image's bundle, and the agent as this site
        assert container["args"][:4] == ["--bundle", "/opt/edgewave/bundle", "--site", "$(EDGEWAVE_SITE_ID)"]
        assert {"name": "EDGEWAVE_SITE_ID", "valueFrom": {"configMapKeyRef": {
            "name": docs["ConfigMap"]["metadata"]["name"], "key": "EDGEWAVE_SITE_ID"}}} in container["env"]
        assert pod["metadata"]["labels"]["edgewave.io/site"] == folder.name, "the agent's and Prometheus' site label"
        assert image == ("127.0.0.1:5000/edgewave-serving:machine-failure-v4" if folder.name == "press-1"
                         else f"127.0.0.1:5000/edgewave-serving@{DIGEST}")
        assert docs["Deployment"]["spec"]["selector"]["matchLabels"].get("edgewave.io/model-version") is None, \
            "a selector must not change between versions (it is immutable)"


def test_a_broken_overlay_fails_validation_naming_the_field(tmp_path: Path) -> None:
    repo = desired_repo(tmp_path)
    repo.commit([state("press-1", 4, "127.0.0.1:5000/edgewave-serving:machine-failure-v4")], "wave 1")
    path = repo.path / overlay_path("press-1")
    doc = yaml.safe_load(path.read_text())
    doc["patches"].append({"target": {"kind": "Deployment"},
                           "patch": "- {op: add, path: /spec/template/spec/containers/0/resourcez, value: {cpu: 1}}"})
    path.write_text(yaml.safe_dump(doc))
    result = validate(render(path.parent, tmp_path / "broken.yaml"))
    assert result.returncode != 0 and "resourcez" in result.stdout + result.stderr


def test_example_manifests_of_core_kinds_validate() -> None:
    for name in ("mlflow-server.yaml", "prometheus-agent.yaml"):
        result = validate(ROOT / "k8s" / "examples" / name)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    for name in ("argocd-applicationset.yaml", "servicemonitor.yaml"):  # CRDs: no schema here, but well formed
        docs = list(yaml.safe_load_all((ROOT / "k8s" / "examples" / name).read_text()))
        assert all(d["apiVersion"] and d["kind"] and d["metadata"]["name"] for d in docs)


def test_image_references_are_checked() -> None:
    assert image_fields("reg:5000/edgewave-serving:m-v3") == {"name": "edgewave-serving", "newName": "reg:5000/edgewave-serving",
                                                            "newTag": "m-v3"}
    assert image_fields(f"reg/edgewave-serving@{DIGEST}")["digest"] == DIGEST
    for bad in ("reg/edgewave-serving", "Reg/UPPER:tag", f"reg/x@sha256:{'z' * 64}"):
        with pytest.raises(ValueError, match="expected"):
            image_fields(bad)


@pytest.fixture
def sitesim(tmp_path: Path):
    """Simulated sites that report what the Git desired state asks for (as Argo CD and agents would)."""
    repo = desired_repo(tmp_path)
    port = free_port()
    process = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sitesim.py"), repo.remote, str(port), TEST_FLEET],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/x/metrics"), 15, "site simulator")
        yield repo, port
    finally:
        stop(process)


def test_a_mixed_fleet_rollout_commits_k8s_overlays_wave_by_wave(sitesim, tmp_path: Path) -> None:
    repo, port = sitesim
    sites = [("line-1", "local"), ("press-1", "k8s"), ("line-2", "local"), ("press-2", "k8s")]
    fleet_path = tmp_path / "fleet.yaml"
    write_fleet_file(fleet_path, [{"id": s, "kind": kind, "metrics_url": f"http://127.0.0.1:{port}/{s}/metrics"}
                            for s, kind in sites],
               [{"name": "canary", "count": 1}, {"name": "half", "percent": 50}, {"name": "rest", "percent": 100}],
               {"interval_seconds": 0.3, "measurements": 1, "min_requests_per_site": 5},
               bake_seconds=0, convergence_deadline_seconds=20)
    v1 = "127.0.0.1:5000/edgewave-serving:machine-failure-v1"
    repo.commit([state(s, 1, v1 if kind == "k8s" else None, "ro-v1") for s, kind in sites], "v1 everywhere")
    image = f"127.0.0.1:5000/edgewave-serving@{DIGEST}"
    settings = Settings(home=tmp_path / "home", fleet_path=fleet_path, desired_state_remote=repo.remote,
                        fleet_id=TEST_FLEET)
    settings.apply_runtime_environment()
    register_versions(settings, {1: {"bundle_url": "file:///b/v1", "onnx_sha256": SHA, "image": v1},
                                 2: {"bundle_url": "file:///b/v2", "onnx_sha256": SHA, "image": image}}, production=1)
    with use(settings):
        result = result_of(rollout(2, return_state=True))  # the rollout flow users run
    assert result["status"] == "succeeded", result
    repo.sync()

    waves = [c for c in git("log", "--reverse", "--format=%H %s", cwd=repo.path).splitlines() if ": wave " in c]
    changed = [git("show", "--name-only", "--format=", c.split()[0], cwd=repo.path).split() for c in waves]
    overlays = [sorted(p.split("/")[2] for p in files if p.startswith("k8s/overlays/")) for files in changed]
    assert overlays == [[], ["press-1"], ["press-2"]], "each wave commit changes the overlays of its K8s sites only"
    for site in ("press-1", "press-2"):
        doc = yaml.safe_load((repo.path / overlay_path(site)).read_text())
        assert doc["images"][0]["digest"] == DIGEST
        assert {"op": "add", "path": "/data/EDGEWAVE_FLEET_ID", "value": TEST_FLEET} in \
            yaml.safe_load(doc["patches"][0]["patch"]), "the site's pods state the fleet that rolled them out"
    assert not (repo.path / "k8s" / "overlays" / "line-1").exists()
