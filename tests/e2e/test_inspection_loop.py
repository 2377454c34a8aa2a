"""The whole loop for visual inspection, through the CLI a user runs: `edgewave demo loop` on the
inspection spec releases a defect-detection CNN, serves it on six local sites that receive camera
images, rolls it out in waves, changes two cameras (a replaced lamp, a lens out of focus), finds
them with the drift check on descriptors and embeddings, retrains with the parts inspectors
labelled, and rolls v2 out everywhere."""

from __future__ import annotations

import http.client
import io
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from edgewave.serving.bundle import ImageInput, load_trusted_keys, verify_bundle
from edgewave.tasks.data.surfaces import generate
from tests.helpers import DEPLOYMENTS, demo_loop_command, demo_loop_fleet, run_demo_loop

SPEC = DEPLOYMENTS / "inspection-dataset.yaml"


@pytest.mark.beside_engine  # local sites, no Docker engine: it evens out make test's two lanes
@pytest.mark.temporary_api  # one command (`edgewave demo loop`) on Prefect's temporary API, as `make run` runs
@pytest.mark.timeout(2700)
def test_release_serve_rollout_drift_and_retrain_on_camera_images(tmp_path: Path) -> None:
    home = tmp_path / "home"
    # one drifted window of 300 rows is enough here: the camera changes are large (brightness 4.5x its
    # threshold), and two 500-row windows in a row took 187 s of the loop's 327 s
    fleet = demo_loop_fleet(tmp_path / "fleet.yaml", drift={"min_samples": 300, "consecutive_windows": 1})
    edgewave = demo_loop_command(home, tmp_path / "fleet.yaml", EDGEWAVE_DATASET=str(SPEC),
                                 EDGEWAVE_MODEL_NAME="surface-defects", EDGEWAVE_DATA_SEED="11",
                                 EDGEWAVE_TRAIN_IMAGES="1600", EDGEWAVE_CNN_EPOCHS="8",
                                 # the loop, not the model's capacity, is under test: the CNN of before
                                 # (bench/vision.py measures the shipped one); it trains in a third of the time
                                 EDGEWAVE_CNN_WIDTHS="[12, 24, 32, 48]")
    try:
        out = run_demo_loop(edgewave)
        assert re.search(r"released surface-defects v1: staged", out), out[-4000:]
        assert "DRIFT DETECTED" in out, out[-4000:]
        # the drift table of the check that fired: each site's top features (what moved), or "-"
        moved = {cells[1].strip(): cells[6] for line in out.splitlines() if line.startswith("│ plant-")
                 for cells in [line.split("│")]}
        assert "brightness" in moved["plant-a-line-3"] and "embedding" in moved["plant-a-line-3"], moved
        assert "sharpness" in moved["plant-b-line-2"] and "embedding" in moved["plant-b-line-2"], moved
        assert all(moved[site].strip() == "-" for site in moved if site not in ("plant-a-line-3", "plant-b-line-2"))
        assert "retrained after drift: v2 staged" in out, out[-4000:]
        served = out.split("sites now serve: ")[-1].splitlines()[0]
        assert served.count("=v2") == 6, served

        registry = json.loads(edgewave("status", "--json").stdout)["registry"]
        assert registry["aliases"]["production"] == 2
        tags = {v["version"]: v["tags"] for v in registry["versions"]}[2]
        manifest = verify_bundle(Path(tags["bundle_url"].removeprefix("file://")), load_trusted_keys(home / "keys"))
        assert isinstance(manifest.input, ImageInput)

        # a site answers a camera image with v2's defect probability and class scores
        pixels, _ = generate(1, seed=5)
        buffer = io.BytesIO()
        Image.fromarray(pixels[0][:, :, 0]).save(buffer, "PNG")
        conn = http.client.HTTPConnection("127.0.0.1", fleet["fleet"]["sites"][0]["port"], timeout=10)
        conn.request("POST", "/v1/predict", buffer.getvalue(), {"Content-Type": "image/png"})
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200 and body["model_version"] == 2, body
        assert set(body["predictions"][0]["scores"]) == {"good", "scratch", "pit", "crack", "stain"}
    finally:
        edgewave("fleet", "down", timeout=120)
