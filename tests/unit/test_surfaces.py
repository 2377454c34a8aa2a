"""The synthetic parts: reproducible, a few percent defective, and each drift scenario moves what it should."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from edgewave.tasks.data.surfaces import DEFECTS, NEW_DEFECT, OK, generate


def _sharpness(images: np.ndarray) -> float:
    return float(np.mean([ndimage.laplace(image[:, :, 0].astype(np.float64)).var() for image in images]))


def test_parts_are_reproducible_and_a_few_percent_are_defective() -> None:
    images, labels = generate(1500, seed=5)
    again, same = generate(1500, seed=5)
    assert np.array_equal(images, again) and labels == same
    assert images.shape == (1500, 64, 64, 1) and images.dtype == np.uint8
    share = sum(label != OK for label in labels) / len(labels)
    assert 0.04 < share < 0.08
    assert set(labels) == {OK, *DEFECTS}, "every defect type appears"
    assert 60 < images.mean() < 180 and images.std() > 10, "a lit surface, neither black nor saturated"


def _detail(images: np.ndarray) -> np.ndarray:
    """Each part's largest deviation from its smoothed self: lines and craters."""
    return np.array([np.abs(i - ndimage.gaussian_filter(i, 3)).max() for i in images[:, :, :, 0].astype(np.float64)])


def _patch(images: np.ndarray) -> np.ndarray:
    """How far a part's darkest smoothed patch sits below its typical brightness: stains."""
    smooth = [ndimage.gaussian_filter(i, 3) for i in images[:, :, :, 0].astype(np.float64)]
    return np.array([np.median(s) - s[8:-8, 8:-8].min() for s in smooth])


@pytest.mark.parametrize(("defect", "measure", "share"), [
    ("scratch", _detail, 0.4), ("pit", _detail, 0.8), ("crack", _detail, 0.8), ("stain", _patch, 0.6)])
def test_a_defect_shows_locally_without_changing_the_parts_brightness(defect: str, measure, share: float) -> None:
    good, _ = generate(200, seed=1, defect_rate=0.0)
    bad, labels = generate(200, seed=1, defect_rate=1.0, defects=(defect,))
    assert set(labels) == {defect}
    above = (measure(bad) > np.quantile(measure(good), 0.9)).mean()
    assert above >= share, f"{defect}: {above:.2f} of defective parts stand out where 0.10 of good ones do"
    assert abs(bad.mean() - good.mean()) < 5, "a defect is local: a brightness threshold does not find it"


def test_each_drift_scenario_moves_what_a_plant_would_see() -> None:
    base, _ = generate(300, seed=2)
    lighting, _ = generate(300, seed=2, scenario="lighting")
    defocus, _ = generate(300, seed=2, scenario="defocus")
    shifted, _ = generate(300, seed=2, scenario="shifted")
    assert lighting.mean() > base.mean() * 1.2
    assert _sharpness(defocus) < _sharpness(base) * 0.5
    assert not np.array_equal(shifted, base) and abs(shifted.mean() - base.mean()) < 5
    _, labels = generate(300, seed=2, defect_rate=1.0, scenario="new_defect")
    assert 0.4 < labels.count(NEW_DEFECT) / 300 < 0.8
    with pytest.raises(ValueError, match=r"no image scenario 'fog'; known: \['defocus'"):
        generate(1, seed=0, scenario="fog")
