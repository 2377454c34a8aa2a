"""Pure logic of the edge runtime: backoff, bundle cache, desired-state files, sample windows."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgewave.serving.agent import backoff
from edgewave.serving.desired import DesiredStateError, read_desired
from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import BundleCache
from edgewave.serving.sampler import Sampler, window_rows

SHA = "a" * 64
FEATURES = ("a", "b")


def test_backoff_is_the_interval_when_healthy_and_jittered_but_capped_when_failing() -> None:
    healthy = [backoff(0, 10) for _ in range(200)]
    assert min(healthy) >= 8.0 and max(healthy) <= 12.0, "the interval ±20 %"
    assert max(healthy) - min(healthy) > 1.0, "healthy sites started together must drift apart, not sync in step"
    waits = [backoff(f, 10) for f in range(1, 12) for _ in range(20)]
    assert all(0 < w <= 10 for w in waits)
    assert max(backoff(1, 10) for _ in range(50)) <= 1.0
    assert min(backoff(8, 10) for _ in range(50)) >= 5.0
    assert len({round(backoff(6, 10), 6) for _ in range(20)}) > 1, "no jitter"


def test_cache_keeps_the_most_recently_used_bundles_and_never_the_served_one(tmp_path: Path) -> None:
    cache = BundleCache(tmp_path, keep=3)
    for v in range(1, 6):
        cache.folder(v).mkdir()
        os.utime(cache.folder(v), (time.time() + v, time.time() + v))
    os.utime(cache.folder(1), (time.time() + 10, time.time() + 10))  # v1 used last (a rollback)
    assert cache.prune(protect=2) == [3]
    assert sorted(cache.versions()) == [1, 2, 4, 5]
    assert cache.prune() == [2]
    assert sorted(cache.versions()) == [1, 4, 5]


def write(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump({"site": "s1", "model": "m", "version": 2, "bundle_url": "file:///b",
                                    "sha256": SHA, "rollout_id": "ro-1", **fields}))
    return path


def test_desired_state_reads_and_refuses_bad_files_naming_the_field(tmp_path: Path) -> None:
    assert read_desired(tmp_path / "absent.yaml", "s1") is None
    assert read_desired(write(tmp_path / "ok.yaml"), "s1").version == 2
    with pytest.raises(DesiredStateError, match="version: Input should be greater than or equal to 1"):
        read_desired(write(tmp_path / "v0.yaml", version=0), "s1")
    with pytest.raises(DesiredStateError, match="sha256: String should match pattern"):
        read_desired(write(tmp_path / "sha.yaml", sha256="abc"), "s1")
    with pytest.raises(DesiredStateError, match="colour: Extra inputs are not permitted"):
        read_desired(write(tmp_path / "extra.yaml", colour="red"), "s1")
    with pytest.raises(DesiredStateError, match="written for site 's1', this is 's2'"):
        read_desired(write(tmp_path / "other.yaml"), "s2")
    (tmp_path / "broken.yaml").write_text("site: [unclosed")
    with pytest.raises(DesiredStateError, match="not valid YAML"):
        read_desired(tmp_path / "broken.yaml", "s1")


def sampler(tmp_path: Path, **kw) -> Sampler:
    return Sampler(tmp_path, "s1", kw.pop("fraction", 1.0), 60, kw.pop("max_bytes", 10**9), SiteMetrics("s1"), **kw)


def test_sample_windows_hold_inputs_prediction_version_and_unique_ids(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    s = sampler(tmp_path)
    s.offer(np.ones((3, 2), np.float32), np.array([0.1, 0.2, 0.9], np.float32), 7, FEATURES)
    s.offer(np.zeros((2, 2), np.float32), np.array([0.5, 0.6], np.float32), 7, FEATURES)
    first = s.flush()
    s.offer(np.zeros((1, 2), np.float32), np.array([0.3], np.float32), 8, FEATURES)
    second = s.flush()
    assert s.flush() is None
    assert window_rows(first) == 5 and window_rows(second) == 1
    table = pq.read_table(first).to_pydict()
    assert set(table) == {"sample_id", "timestamp", "a", "b", "probability", "model_version"}
    assert table["model_version"] == [7] * 5
    ids = table["sample_id"] + pq.read_table(second).to_pydict()["sample_id"]
    assert len(set(ids)) == 6
    assert s.windows() == [first, second]


def test_a_window_keeps_the_images_nearest_the_threshold_within_its_byte_budget(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    s = sampler(tmp_path, image_bytes=1000)
    probabilities = np.linspace(0, 1, 40, dtype=np.float32)  # threshold 0.3: rows 11 and 12 are nearest
    files = [f"image {i:02d}".encode().ljust(100, b".") for i in range(40)]  # 100 bytes each: 10 fit
    for start in range(0, 40, 8):
        s.offer(np.zeros((8, 2), np.float32), probabilities[start:start + 8], 3, FEATURES,
                images=files[start:start + 8], threshold=0.3)
    s.offer(np.zeros((1, 2), np.float32), np.array([0.3], np.float32), 3, FEATURES,
            images=[b"x" * 1001], threshold=0.3)  # on the threshold, but alone bigger than the budget
    table = pq.read_table(s.flush()).to_pydict()
    kept = [i for i, data in enumerate(table["image"]) if data is not None]
    nearest = sorted(np.argsort(np.abs(probabilities - 0.3), kind="stable")[:10].tolist())
    assert kept == nearest and all(table["image"][i] == files[i] for i in kept)
    s.offer(np.zeros((1, 2), np.float32), np.array([0.5], np.float32), 3, FEATURES)
    assert "image" not in pq.read_table(s.flush()).column_names, "a window without images has no image column"


def test_fraction_zero_samples_nothing_and_bounds_count_what_they_drop(tmp_path: Path) -> None:
    none = sampler(tmp_path / "none", fraction=0.0)
    none.offer(np.ones((3, 2), np.float32), np.ones(3, np.float32), 1, FEATURES)
    assert none.flush() is None

    small = sampler(tmp_path / "mem", max_pending_rows=4)
    small.offer(np.ones((3, 2), np.float32), np.ones(3, np.float32), 1, FEATURES)
    small.offer(np.ones((3, 2), np.float32), np.ones(3, np.float32), 1, FEATURES)  # over the memory bound
    assert small.metrics.samples_dropped.labels("memory")._value.get() == 3
    assert window_rows(small.flush()) == 3

    disk = sampler(tmp_path / "disk", max_bytes=1)
    disk.offer(np.ones((3, 2), np.float32), np.ones(3, np.float32), 1, FEATURES)
    disk.flush()
    assert disk.windows() == [] and disk.metrics.samples_dropped.labels("buffer_full")._value.get() == 3


def test_an_unreachable_bundle_leaves_nothing_in_the_cache_and_is_retried(tmp_path: Path) -> None:
    from edgewave.serving.agent import Agent
    from edgewave.serving.desired import DesiredState
    from edgewave.serving.model import ModelSlot

    cache = BundleCache(tmp_path / "bundles")
    agent = Agent("s1", tmp_path, str(tmp_path / "remote"), (tmp_path / "store").as_uri(), ModelSlot(), cache, {},
                  SiteMetrics("s1"), None, 1.0)
    desired = DesiredState(site="s1", model="m", version=5, bundle_url=(tmp_path / "absent").as_uri(), sha256=SHA,
                           rollout_id="ro-1")
    with pytest.raises(ConnectionError, match="bundle v5 not fetched"):
        agent.apply(desired)
    assert cache.versions() == [] and not any(cache.root.iterdir())
    assert agent.refused == {}, "an unreachable store is retried, not refused for good"
