"""Drift on images with Evidently: a site whose lamp was replaced and one whose lens went out of focus
are found and named with what moved (descriptors, embedding); a healthy site is not flagged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewave.serving.images import DESCRIPTORS, EMBEDDING_PREFIX, descriptors
from edgewave.tasks.data.images import ImageSet
from edgewave.tasks.data.surfaces import DEFECTS, OK, generate
from edgewave.tasks.drift.checks import EMBEDDING, compare
from edgewave.tasks.drift.reference import ReferenceData
from edgewave.tasks.platform.fleetfile import DriftPolicy
from edgewave.tasks.release import vision

CLASSES = (OK, *DEFECTS)


@pytest.fixture(scope="module")
def model_and_reference() -> tuple[bytes, ReferenceData]:
    images, labels = generate(600, seed=11, size=(48, 48))
    split = vision.split_images(ImageSet(images, np.array([CLASSES.index(c) for c in labels]), (), CLASSES))
    model = vision.to_onnx(vision.train_cnn(split, seed=0, epochs=2, widths=(6, 8, 12, 16)), channels=1)
    columns = vision.image_reference(model, split.x_train, 400).columns
    embedding = tuple(c for c in columns if c.startswith(EMBEDDING_PREFIX))
    frame = pd.DataFrame({c: np.asarray(v, dtype=np.float32) for c, v in columns.items()})
    return model, ReferenceData(1, DESCRIPTORS, frame, 0.5, embedding)


def _site_rows(model: bytes, images: np.ndarray) -> pd.DataFrame:
    """What a site ships for these images: descriptors, embedding, defect probability (serving/app.py)."""
    probabilities, embedding = vision.onnx_predict(model, images)
    rows = pd.DataFrame(descriptors(images), columns=list(DESCRIPTORS))
    for i in range(embedding.shape[1]):
        rows[f"{EMBEDDING_PREFIX}{i}"] = embedding[:, i].astype(np.float32)
    rows["probability"] = (1 - probabilities[:, 0]).astype(np.float32)
    rows["timestamp"] = np.arange(len(rows), dtype=float)
    return rows


@pytest.mark.parametrize(("scenario", "drifted", "moved"), [
    ("none", False, set()),
    ("lighting", True, {"brightness", EMBEDDING}),
    ("defocus", True, {"sharpness", EMBEDDING}),
])
def test_a_changed_camera_is_found_and_named_and_a_healthy_one_is_not(model_and_reference, scenario: str,
                                                                       drifted: bool, moved: set[str]) -> None:
    model, reference = model_and_reference
    images, _ = generate(500, seed=40, size=(48, 48), scenario=scenario)
    check = compare("camera-1", "check-1", _site_rows(model, images), reference, DriftPolicy(), None)
    assert check.drifted is drifted, [(c.column, round(c.score, 3), c.threshold) for c in check.columns]
    found = {c.column for c in check.columns if c.drifted}
    assert moved <= found if drifted else found == set(), found
    assert {c.column for c in check.columns} == {*DESCRIPTORS, EMBEDDING}
    embedding = next(c for c in check.columns if c.column == EMBEDDING)
    assert embedding.method == "classifier ROC AUC" and 0 <= embedding.score <= 1
