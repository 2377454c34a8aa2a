"""`edgewave release` on the inspection spec (kind: images): generated parts, a CNN against the plain
baseline, a signed image bundle in the registry; a second release gated against the first. A plant's
own folder of images is checked with `edgewave data check`, and a bad image named before training."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from edgewave.serving.bundle import ImageInput, load_trusted_keys, verify_bundle
from edgewave.tasks.data.surfaces import generate
from tests.helpers import BIN, DEPLOYMENTS, edgewave_env

SPEC = DEPLOYMENTS / "inspection-dataset.yaml"


def edgewave(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    chosen = {"EDGEWAVE_DATASET": str(SPEC), "EDGEWAVE_MODEL_NAME": "surface-defects", "EDGEWAVE_TRAIN_IMAGES": "900",
              "EDGEWAVE_CNN_EPOCHS": "4",
              "EDGEWAVE_CNN_WIDTHS": "[12, 24, 32, 48]", **env}
    environment = {k: v for k, v in edgewave_env(home, **chosen).items()
                   if k != "DOCKER_HOST"}  # no engine: the serving-image step skips
    return subprocess.run([str(BIN / "edgewave"), *args], env=environment, capture_output=True, text=True, timeout=900)


def test_an_image_release_trains_gates_and_registers_a_signed_image_bundle(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = edgewave(home, "release", "--seed", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert json.loads(first.stdout.strip().splitlines()[-1]) == {"model": "surface-defects", "version": 1, "staged": True}
    second = edgewave(home, "release", "--seed", "2")
    assert second.returncode == 0, second.stdout + second.stderr
    assert "of v1 (@staging) on the same held-out data" in second.stderr

    status = edgewave(home, "status", "--json")
    versions = {v["version"]: v for v in json.loads(status.stdout)["registry"]["versions"]}
    tags = versions[2]["tags"]
    assert tags["input_features"] == "image:64x64x1:good|scratch|pit|crack|stain"
    assert tags["family"] in ("cnn", "baseline") and float(tags["parity_max_abs_diff"]) <= 1e-4
    assert tags["int8"].startswith("int8 (static, calibrated on")
    manifest = verify_bundle(Path(tags["bundle_url"].removeprefix("file://")), load_trusted_keys(home / "keys"))
    assert isinstance(manifest.input, ImageInput) and (manifest.input.width, manifest.input.channels) == (64, 1)
    assert manifest.class_labels == ["good", "scratch", "pit", "crack", "stain"]
    assert {"brightness", "sharpness", "embedding_0", "probability"} <= set(manifest.reference.columns)

    # a table spec's model name cannot take the camera's model: refused before training
    clash = edgewave(home, "release", "--seed", "3", EDGEWAVE_DATASET=str(DEPLOYMENTS / "dataset.yaml"))
    assert clash.returncode != 0
    assert "takes image:64x64x1:good|scratch|pit|crack|stain, but the dataset 'ai4i-milling'" in clash.stderr


def test_a_plants_image_folder_is_checked_and_a_bad_file_named_before_training(tmp_path: Path) -> None:
    root = tmp_path / "parts"
    images, labels = generate(60, seed=9, defect_rate=0.5)
    for i, (pixels, label) in enumerate(zip(images, labels)):
        (root / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[:, :, 0]).save(root / label / f"{i:03d}.png")
    home = tmp_path / "home"
    check = edgewave(home, "data", "check", str(root))
    assert check.returncode == 0, check.stderr
    assert "60 images kept, 64x64 (1 channel(s))" in check.stdout
    assert f"{sum(label != 'good' for label in labels)} defective" in check.stdout

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(root / "pit" / "colour.png")
    refused = edgewave(home, "release", EDGEWAVE_DATA_PATH=str(root))
    assert refused.returncode == 2
    assert "pit/colour.png: mode RGB, the spec declares 1 channel(s)" in refused.stderr
    assert "Traceback" not in refused.stderr and "release failed" not in refused.stderr, "refused before any run"
