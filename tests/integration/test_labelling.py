"""`edgewave label export` writes what a site doubted, most doubtful first; a person fills labels.csv;
`edgewave label import` checks every row and stores the labelled images as the site's feedback."""

from __future__ import annotations

import csv
import io
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.sampler import Sampler
from edgewave.tasks.data.surfaces import generate
from edgewave.tasks.platform.monitoring import MonitoringStore
from tests.helpers import BIN, DEPLOYMENTS, edgewave_env

SITE = "plant-c-camera-2"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = edgewave_env(home, EDGEWAVE_DATASET=str(DEPLOYMENTS / "inspection-dataset.yaml"))
    return subprocess.run([str(BIN / "edgewave"), *args], env=env, capture_output=True, text=True, timeout=300)


def test_a_person_labels_what_the_site_doubted_and_it_becomes_feedback(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store_folder = home / "monitoring" / SITE  # the embedded monitoring store, as the agent ships into it
    sampler = Sampler(store_folder, SITE, 1.0, 60, 10**9, SiteMetrics(SITE), image_bytes=10**6)
    images, _ = generate(12, seed=3)
    files = []
    for pixels in images:
        buffer = io.BytesIO()
        Image.fromarray(pixels[:, :, 0]).save(buffer, "PNG")
        files.append(buffer.getvalue())
    probabilities = np.linspace(0.05, 0.95, 12).astype(np.float32)
    sampler.offer(np.zeros((12, 3), np.float32), probabilities, 1, ("brightness", "contrast", "sharpness"),
                  images=files, threshold=0.5)
    assert sampler.flush() is not None
    store = MonitoringStore((home / "monitoring").as_uri())

    out = tmp_path / "to-label"
    exported = _cli(home, "label", "export", "--site", SITE, "--out", str(out), "--limit", "4")
    assert exported.returncode == 0, exported.stderr
    with (out / "labels.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    exported_p = [float(r["defect_probability"]) for r in rows]
    doubts = [abs(p - 0.5) for p in exported_p]
    assert doubts == sorted(doubts), "the most doubtful first"
    assert sorted(exported_p) == sorted(round(float(p), 4) for p in probabilities if abs(p - 0.5) < 0.2)
    assert all((out / r["file"]).read_bytes() in files for r in rows)

    rows[0]["label"], rows[1]["label"] = "scratch", "dent"
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    refused = _cli(home, "label", "import", str(out), "--site", SITE)
    assert refused.returncode == 2 and "labels.csv:3: label 'dent' is not one of the classes" in refused.stderr
    assert store.read_feedback(100).empty, "nothing stored on a bad row"

    rows[1]["label"] = "good"
    with (out / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    imported = _cli(home, "label", "import", str(out), "--site", SITE)
    assert imported.returncode == 0, imported.stderr
    feedback = store.read_feedback(100)
    assert list(feedback["label"]) == ["scratch", "good"]
    assert list(feedback["image"]) == [(out / rows[0]["file"]).read_bytes(), (out / rows[1]["file"]).read_bytes()]
