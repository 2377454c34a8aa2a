"""The training reference of a model version, as drift checks compare with it: the bundle's
reference rows, scored by that version's own model, after the bundle's signature and hashes
verified. Downloaded once per process into this process's own EDGEWAVE_HOME (on a Dask worker,
the worker's), which is only a cache: nothing another checker needs lives there."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from edgewave.serving.bundle import BundleError, parse_public_keys
from edgewave.serving.images import EMBEDDING_PREFIX
from edgewave.serving.model import load_model
from edgewave.serving.settings import EdgeSettings
from edgewave.serving.transport import download_bundle
from edgewave.tasks.release.bundle import bundle_url, trusted_public_keys


@dataclass(frozen=True)
class ReferenceData:
    """The training reference of one model version, scored by that version's own model."""

    version: int
    features: tuple[str, ...]  # columns judged one by one (an image model's descriptors)
    frame: pd.DataFrame  # feature columns (+ embedding columns) + "probability"
    threshold: float
    embedding: tuple[str, ...] = ()  # an image model's embedding columns, judged together


def cache_home(settings) -> Path:
    """Where this process caches: its own EDGEWAVE_HOME when it has one (a worker on another
    machine), else the flow's home (a process pool beside the flow)."""
    return EdgeSettings().home if "EDGEWAVE_HOME" in os.environ else settings.home


def reference_for(settings, model_name: str, version: int) -> ReferenceData:
    """Download (once per process's home), verify and score the bundle's training reference."""
    return _reference(str(cache_home(settings)), settings.bundle_store, trusted_public_keys(settings), model_name,
                      version)


@lru_cache(maxsize=8)
def _reference(home: str, store: str, keys: str, model_name: str, version: int) -> ReferenceData:
    store_key = hashlib.sha256(store.encode()).hexdigest()[:12]
    folder = Path(home) / "cache" / "bundles" / store_key / model_name / f"v{version}"
    trusted = parse_public_keys(keys)
    try:
        model = load_model(_fetch(folder, bundle_url(store, model_name, version)), trusted)
    except BundleError:  # a cached copy that no longer verifies (a store rebuilt, a key rotated): fetch again
        shutil.rmtree(folder, ignore_errors=True)
        model = load_model(_fetch(folder, bundle_url(store, model_name, version)), trusted)
    columns = model.manifest.reference.columns
    if model.image is not None:  # the release scored its reference images: descriptors, embedding, probability
        frame = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float32)
                              for name in (*model.feature_names, "probability")})
        embedding = tuple(n for n in model.feature_names if n.startswith(EMBEDDING_PREFIX))
        return ReferenceData(version, tuple(n for n in model.feature_names if n not in embedding), frame,
                             model.threshold, embedding)
    frame = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float32) for name in model.feature_names})
    frame["probability"] = model.failure_probability(frame.to_numpy(dtype=np.float32)).astype(np.float32)
    return ReferenceData(version, model.feature_names, frame, model.threshold)


def _fetch(folder: Path, url: str) -> Path:
    """The bundle at `url` in `folder`, downloaded unless already there (whole: renamed into place)."""
    if folder.exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        download_bundle(url, partial)
        with contextlib.suppress(OSError):  # another process got there first; its copy is the same bundle
            os.rename(partial, folder)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder
