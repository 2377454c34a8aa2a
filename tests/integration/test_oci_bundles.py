"""Bundles as OCI artifacts in a real registry (Debian's docker-registry on 127.0.0.1): pushed with
oras, one layer per file whose digest is the file's sha256, pulled back by digest unchanged;
a site whose desired state names the artifact pulls it, verifies it and serves it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import pytest
import requests

from edgewave.serving.access import RemoteAccess
from edgewave.serving.oci import ARTIFACT_TYPE, MEDIA_TYPES, MODEL_MEDIA_TYPE, OciError, Reference, pull_bundle
from edgewave.tasks.platform import engine
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.bundle import push_artifact
from tests.helpers import DesiredRepo, free_port, start_site, stop, wait_for

STATE = Path(tempfile.gettempdir()) / f"edgewave-test-registry-{os.getuid()}"


@pytest.fixture(scope="module")
def registry():
    try:
        address = engine.start_registry(STATE, free_port())
    except engine.EngineUnavailable as exc:
        pytest.skip(f"no OCI registry can run here: {exc}")
    yield address
    engine.stop_registry(STATE)


def push(bundles, registry: str, version: int, folder: Path) -> str:
    settings = Settings(home=bundles.home, bundle_registry=registry)
    return push_artifact(settings, folder, "machine-failure", version)


def test_a_bundle_round_trips_the_registry_by_digest_one_layer_per_file(bundles, registry, tmp_path: Path) -> None:
    ref = push(bundles, registry, 1, bundles.v1)
    parsed = Reference.parse(ref)
    assert parsed.registry == registry and parsed.digest.startswith("sha256:")
    manifest = requests.get(f"http://{registry}/v2/{parsed.repository}/manifests/{parsed.digest}", timeout=10,
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()
    assert manifest["config"]["mediaType"] == ARTIFACT_TYPE
    layers = {layer["annotations"]["org.opencontainers.image.title"]: layer for layer in manifest["layers"]}
    files = sorted(p.name for p in bundles.v1.iterdir())
    assert sorted(layers) == files, "one layer per bundle file"
    for name, layer in layers.items():
        assert layer["digest"] == "sha256:" + hashlib.sha256((bundles.v1 / name).read_bytes()).hexdigest()
        assert layer["mediaType"] == MEDIA_TYPES.get(name, MODEL_MEDIA_TYPE)
    pulled = pull_bundle(ref, tmp_path / "pulled", RemoteAccess())
    assert {p.name: p.read_bytes() for p in pulled.iterdir()} == {p.name: p.read_bytes() for p in bundles.v1.iterdir()}


def test_a_site_pulls_by_digest_only(registry, bundles, tmp_path: Path) -> None:
    ref = push(bundles, registry, 2, bundles.v2)
    by_tag = Reference.parse(ref)
    with pytest.raises(ValueError, match="by digest only"):
        pull_bundle(Reference(by_tag.registry, by_tag.repository, tag="v2").url(), tmp_path / "t", RemoteAccess())
    wrong = Reference(by_tag.registry, by_tag.repository, digest="sha256:" + "0" * 64).url()
    with pytest.raises(OciError, match="pull of .* failed"):
        pull_bundle(wrong, tmp_path / "w", RemoteAccess())


def test_an_agent_applies_a_bundle_named_by_its_oci_digest(registry, bundles, tmp_path: Path) -> None:
    ref = push(bundles, registry, 2, bundles.v2)
    home = tmp_path / "site-home"
    shutil.copytree(bundles.home / "keys", home / "keys", ignore=shutil.ignore_patterns("*.key"))
    repo = DesiredRepo(tmp_path / "desired")
    repo.set("plant-a-line-1", 2, bundles.v2, bundles.sha(bundles.v2), bundle_url=ref)
    port = free_port()
    log = tmp_path / "site.log"
    site = start_site(home, port, log, "--site", "plant-a-line-1", EDGEWAVE_DESIRED_STATE_REMOTE=str(repo.path),
                      EDGEWAVE_SYNC_INTERVAL_SECONDS="0.5", EDGEWAVE_SAMPLE_FRACTION="0")
    try:
        def serving_v2() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    return json.loads(response.read())["model_version"] == 2
            except OSError:
                return False
        wait_for(serving_v2, 60, "the site to pull v2 from the registry")
    finally:
        stop(site)
    assert ref in log.read_text() or Reference.parse(ref).digest in log.read_text()
    cached = home / "sites" / "plant-a-line-1" / "bundles" / "v2"
    assert (cached / "model.onnx").read_bytes() == (bundles.v2 / "model.onnx").read_bytes()
