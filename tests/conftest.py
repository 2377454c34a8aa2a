"""Shared fixtures: a temporary home, and (session-scoped) trained models, exports and signed bundles."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgewave.tasks.data.ai4i import generate
from edgewave.tasks.data.spec import load_spec
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
from edgewave.tasks.release.export import Export, export_model
from edgewave.tasks.release.features import Features
from edgewave.tasks.release.train import Split, TrainedModel, split_data, train_sklearn, train_torch


def pytest_configure(config: pytest.Config) -> None:
    """Prefect's temporary API, started by any test that runs a flow without a server, gets the same
    start-up deadline as the product gives it (Settings.apply_runtime_environment): its default 20 s
    ran out while both test lanes kept the machine busy."""
    import os

    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test's folder is its kind: tests/integration → `integration`, tests/e2e → `e2e`, so none lacks its marker.
    Every e2e test and every test on the session's Docker engine is also `engine_lane`: `make test`
    runs that lane and the rest side by side (scripts/test-lanes.sh), one engine per lane. An e2e
    test marked `beside_engine` (no engine, local sites only) runs in the other lane instead: the
    engine lane took 25 minutes and the other 12 on a clean clone."""
    for item in items:
        kind = item.path.parent.name
        if kind in ("integration", "e2e"):
            item.add_marker(getattr(pytest.mark, kind))
        on_engine = "engine" in getattr(item, "fixturenames", ())
        if on_engine or (kind == "e2e" and item.get_closest_marker("beside_engine") is None):
            item.add_marker(pytest.mark.engine_lane)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings with every piece of state under a fresh temporary home."""
    for var in ("EDGEWAVE_TRACKING_URI", "EDGEWAVE_BUNDLE_STORE_URL", "EDGEWAVE_SIGNING_KEY_PATH"):
        monkeypatch.delenv(var, raising=False)
    return Settings(home=tmp_path / "home", train_rows=4000)


AI4I_SPEC = load_spec(Path(__file__).resolve().parents[1] / "deployments" / "dataset.yaml")
AI4I = Features.of(AI4I_SPEC)


@pytest.fixture(scope="session")
def split() -> Split:
    """AI4I rows with the shipped spec's derived features (power, temperature gap, strain)."""
    return split_data(generate(6000, 21), seed=0, features=AI4I)


@pytest.fixture(scope="session")
def trained(split: Split) -> dict[str, TrainedModel]:
    """Both families and a blend of the two (weights fixed here: `blend` chooses them in a release)."""
    from edgewave.tasks.release.train import Blend, _finish

    models = {"sklearn": train_sklearn(split), "torch": train_torch(split, epochs=40)}
    mixed = Blend((models["sklearn"], models["torch"]), (0.7, 0.3))
    return {**models, "ensemble": _finish("ensemble", mixed, mixed.predict_proba, {"family": "ensemble"}, split)}


@pytest.fixture(scope="session")
def exported(trained: dict[str, TrainedModel], split: Split) -> dict[str, Export]:
    return {family: export_model(model, split.x_test, split.y_test, features=split.features)
            for family, model in trained.items()}


@dataclass(frozen=True)
class Bundles:
    """Signed bundles in a bundle store under `home`, plus two that a site must refuse."""

    home: Path
    v1: Path  # sklearn
    v2: Path  # torch
    foreign: Path  # v3, signed by a key the site does not trust
    corrupt: Path  # v4, one byte of model.onnx changed after signing
    make: Callable[[Path, int, str], Path]  # (folder, version, family) → another good bundle, signed alike

    def sha(self, folder: Path) -> str:
        return json.loads((folder / "bundle.json").read_text())["model"]["sha256"]


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory, split: Split, trained: dict[str, TrainedModel],
            exported: dict[str, Export]) -> Bundles:
    home = tmp_path_factory.mktemp("edge-home")
    settings = Settings(home=home)
    key = load_or_create_signing_key(settings.signing_key)
    store = home / "bundles" / "machine-failure"

    def make(version: int, family: str, signer=key, folder: Path | None = None) -> Path:
        t, e = trained[family], exported[family]
        manifest = build_manifest(
            name="machine-failure", version=version, family=family, model=e.model, int8_model=None,
            train_frame=split.train_frame, threshold=t.metrics.threshold, metrics=t.metrics.as_dict(),
            data_fingerprint=split.data_fingerprint, parity_max_abs_diff=e.parity_max_abs_diff, reference_rows=500,
            physical=AI4I_SPEC.physical_ranges(),  # as a release writes them
        )
        return write_bundle(folder or store / f"v{version}", manifest, e.model, None, signer)

    v1, v2 = make(1, "sklearn"), make(2, "torch")
    foreign = make(3, "sklearn", Ed25519PrivateKey.generate())
    corrupt = make(4, "torch")
    data = bytearray((corrupt / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (corrupt / "model.onnx").write_bytes(bytes(data))
    return Bundles(home, v1, v2, foreign, corrupt, lambda folder, version, family: make(version, family, folder=folder))


@dataclass(frozen=True)
class DockerEngine:
    docker_host: str
    registry: str
    base_image: str


@pytest.fixture(scope="session")
def engine(tmp_path_factory: pytest.TempPathFactory) -> DockerEngine:
    """A real Docker engine (dockerd --iptables=false --ip6tables=false --bridge=none) and OCI
    registry for the session, with the debootstrap base image; stopped by pid at the end. Its
    state is kept between runs so the base image is built once per machine."""
    import os
    import subprocess
    import tempfile

    from edgewave.tasks.platform import engine as engines
    from tests.helpers import free_port

    state = Path(tempfile.gettempdir()) / f"edgewave-test-docker-{os.getuid()}"
    try:
        running = engines.start(state, registry_port=free_port())
    except engines.EngineUnavailable as exc:
        pytest.skip(f"no Docker engine can run here: {exc}")
    base = "edgewave-base:bookworm-py311"
    try:
        root = Path(__file__).resolve().parents[1]
        result = subprocess.run([str(root / "scripts" / "build-base-image.sh"), base], capture_output=True, text=True,
                                timeout=900, env={**os.environ, "DOCKER_HOST": running.docker_host})
        assert result.returncode == 0, f"base image: {result.stdout}{result.stderr}"
        yield DockerEngine(running.docker_host, running.registry, base)
    finally:
        engines.stop(state)
