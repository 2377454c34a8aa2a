"""Sites without processes: rows scored by a bundle's model, written by the site's own
`Sampler` and shipped with the agent's confirmed upload, exactly as a live site would.

The drift benchmark and the drift tests use it for fleets far larger than this machine could
run as processes (100 sites × 5,000 rows); live fleets (`make run`) ship the same files.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import LoadedModel
from edgewave.serving.sampler import Sampler
from edgewave.serving.transport import upload_confirmed


def write_windows(folder: Path, site: str, frame: pd.DataFrame, model: LoadedModel, window_rows: int = 1_000,
                  metrics: SiteMetrics | None = None) -> list[Path]:
    """Score `frame` with `model` and write it as the site's sample windows of `window_rows` rows."""
    features = model.feature_names
    x = frame[list(features)].to_numpy(dtype=np.float32)
    proba = model.failure_probability(x)
    sampler = Sampler(folder, site, fraction=1.0, window_seconds=3600, max_bytes=1 << 40,
                      metrics=metrics or SiteMetrics(site))
    paths = []
    for start in range(0, len(x), window_rows):
        sampler.offer(x[start:start + window_rows], proba[start:start + window_rows], model.version, features)
        paths.append(sampler.flush())
    return [p for p in paths if p is not None]


def upload_windows(store_url: str, site: str, paths: list[Path]) -> list[str]:
    """The agent's shipping step: confirmed upload, then the local file goes."""
    shipped = []
    for path in paths:
        shipped.append(upload_confirmed(path, store_url, f"{site}/{path.name}"))
        path.unlink()
    return shipped


def ship_windows(store_url: str, site: str, frame: pd.DataFrame, model: LoadedModel, window_rows: int = 1_000) -> list[str]:
    """Write and upload at once: a site that was never offline."""
    with tempfile.TemporaryDirectory(prefix=f"sim-{site}-") as folder:
        return upload_windows(store_url, site, write_windows(Path(folder), site, frame, model, window_rows))
