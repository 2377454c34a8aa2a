"""Bundles through a real fsspec store: what the edge downloads is what was signed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgewave.serving.bundle import MODEL, HashMismatchError, load_trusted_keys, verify_bundle
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import bundle as bundles
from edgewave.tasks.release.export import Export, onnx_proba
from edgewave.tasks.release.train import Split, TrainedModel


@pytest.mark.parametrize("store", ["file", "memory"])
def test_upload_download_verify_and_predict(store: str, settings: Settings, tmp_path: Path, split: Split,
                                            trained: dict[str, TrainedModel], exported: dict[str, Export]) -> None:
    export = exported["torch"]
    key = bundles.load_or_create_signing_key(settings.signing_key)
    manifest = bundles.build_manifest(
        name="m", version=5, family="torch", model=export.model, int8_model=export.quantized.model,
        train_frame=split.train_frame, threshold=trained["torch"].metrics.threshold,
        metrics=trained["torch"].metrics.as_dict(), data_fingerprint=split.data_fingerprint,
        parity_max_abs_diff=export.parity_max_abs_diff, reference_rows=500,
    )
    local = bundles.write_bundle(tmp_path / "out", manifest, export.model, export.quantized.model, key)
    root = settings.bundle_store if store == "file" else f"memory://{tmp_path.name}"
    url = bundles.bundle_url(root, "m", 5)
    assert bundles.upload_bundle(local, url) == url
    assert bundles.upload_bundle(local, url) == url  # idempotent re-upload

    fetched = bundles.download_bundle(url, tmp_path / "edge-cache")
    verified = verify_bundle(fetched, load_trusted_keys(settings.trusted_keys))
    assert verified.version == 5 and verified.data_fingerprint == split.data_fingerprint
    np.testing.assert_allclose(onnx_proba((fetched / MODEL).read_bytes(), split.x_test[:50]),
                               trained["torch"].predict_proba(split.x_test[:50]), atol=1e-4)

    (fetched / MODEL).write_bytes((fetched / MODEL).read_bytes()[:-1] + b"\x00")
    with pytest.raises(HashMismatchError):
        verify_bundle(fetched, load_trusted_keys(settings.trusted_keys))


def test_download_of_a_missing_bundle_says_where(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no bundle.json there"):
        bundles.download_bundle((tmp_path / "nothing").as_uri(), tmp_path / "x")
