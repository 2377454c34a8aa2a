"""Drift sampling: a share of requests goes to rolling Parquet window files.

The request path only appends to an in-memory list under a lock (microseconds); a writer
thread turns it into one Parquet file per window (written to a temp name, fsynced, then
renamed, so the agent never ships half a file). Memory and disk are bounded: the buffer stays
under EDGEWAVE_SAMPLE_BUFFER_MAX_BYTES and within the free space of its volume (the oldest
windows go first), and a window that still cannot be written (disk full, permissions) is
dropped. Every lost row is counted in `edgewave_samples_dropped_total{reason}`, never silently.
"""

from __future__ import annotations

import heapq
import logging
import os
import random
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from edgewave.serving.background import Background
from edgewave.serving.metrics import SiteMetrics

log = logging.getLogger("edgewave.sampler")
WINDOW_RE = re.compile(r"^(?P<site>.+)-(?P<start>\d+)-(?P<seq>\d+)-n(?P<rows>\d+)\.parquet$")


def window_rows(path: Path) -> int:
    match = WINDOW_RE.match(path.name)
    return int(match["rows"]) if match else 0


class Sampler(Background):
    thread_name = "sampler"

    def __init__(self, folder: Path, site_id: str, fraction: float,
                 window_seconds: float, max_bytes: int, metrics: SiteMetrics, max_pending_rows: int = 200_000,
                 image_bytes: int = 1_000_000) -> None:
        self.folder = folder
        self.site_id = site_id
        self.features: tuple[str, ...] = ()
        self.fraction = fraction
        self.window_seconds = window_seconds
        self.max_bytes = max_bytes
        self.metrics = metrics
        self.max_pending_rows = max_pending_rows
        self.boot = uuid.uuid4().hex[:8]  # sample ids stay unique across restarts
        self._pending: list[tuple[float, np.ndarray, np.ndarray, int]] = []
        self._pending_rows = 0
        self._seq = 0
        self._row_seq = 0
        self._bytes_per_row = 64.0  # measured after the first window
        self.image_bytes = image_bytes
        # The window's images kept so far, as a heap whose first entry is the most certain one (the first
        # to go when the budget is exceeded): (-distance from the threshold, row in the window, bytes).
        self._images: list[tuple[float, int, bytes]] = []
        self._image_total = 0
        self._lock = threading.Lock()
        super().__init__()
        folder.mkdir(parents=True, exist_ok=True)

    # -- request path --------------------------------------------------------------------
    def draw(self) -> bool:
        """Whether this request is sampled: decided before its rows are put together (an image's
        descriptors cost more than scoring it, so only the sampled ones are computed)."""
        return self.fraction > 0 and (self.fraction >= 1 or random.random() < self.fraction)

    def offer(self, x: np.ndarray, proba: np.ndarray, version: int, features: tuple[str, ...],
              drawn: bool = False, images: list[bytes] | None = None, threshold: float = 0.5) -> None:
        """Keep `x` (with `proba`) for the next window if this request is sampled (`drawn`: already decided);
        an image model's encoded `images` compete for the window's image budget, nearest `threshold` first."""
        if not (drawn or self.draw()):
            return
        if features != self.features:  # a new model with other inputs: close the window first
            self.flush()
            self.features = features
        with self._lock:
            if self._pending_rows + len(x) > self.max_pending_rows:
                self.metrics.samples_dropped.labels("memory").inc(len(x))
                return
            if images and self.image_bytes > 0:
                for j, (data, p) in enumerate(zip(images, proba.tolist(), strict=True)):
                    self._keep_image(-abs(p - threshold), self._pending_rows + j, data)
            self._pending.append((time.time(), x, proba, version))
            self._pending_rows += len(x)

    def _keep_image(self, certainty: float, row: int, data: bytes) -> None:
        """Under the lock: add an image and drop the most certain ones while over the budget."""
        if len(data) > self.image_bytes:
            return
        heapq.heappush(self._images, (certainty, row, data))
        self._image_total += len(data)
        while self._image_total > self.image_bytes:
            _, _, dropped = heapq.heappop(self._images)
            self._image_total -= len(dropped)

    # -- writer --------------------------------------------------------------------------
    def flush(self) -> Path | None:
        """Write what is pending as one window file now; returns it (None when nothing pending)."""
        with self._lock:
            batch, n = self._pending, self._pending_rows
            self._pending, self._pending_rows = [], 0
            kept, self._images, self._image_total = self._images, [], 0
            if not batch:
                return None
            self._seq += 1
            seq, first = self._seq, self._row_seq
            self._row_seq += n
        import pyarrow as pa
        import pyarrow.parquet as pq

        x = np.concatenate([b[1] for b in batch])
        columns: dict[str, Any] = {
            "sample_id": [f"{self.site_id}-{self.boot}-{i}" for i in range(first, first + n)],
            "timestamp": np.concatenate([np.full(len(b[1]), b[0]) for b in batch]),
            **{name: x[:, j] for j, name in enumerate(self.features)},
            "probability": np.concatenate([b[2] for b in batch]).astype(np.float32),
            "model_version": np.concatenate([np.full(len(b[1]), b[3], dtype=np.int64) for b in batch]),
        }
        if kept:  # the images people will label, by row; the other rows carry none
            images: list[bytes | None] = [None] * n
            for _, row, data in kept:
                images[row] = data
            columns["image"] = pa.array(images, type=pa.binary())
        start = int(batch[0][0] * 1000)
        path = self.folder / f"{self.site_id}-{start}-{seq:06d}-n{n}.parquet"
        tmp = self.folder / f".{path.name}.tmp"
        try:
            self._make_room(n)
            pq.write_table(pa.table(columns), tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except OSError as exc:  # disk full, read-only, permissions: the window is lost, and counted
            tmp.unlink(missing_ok=True)
            self.metrics.samples_dropped.labels("write_failed").inc(n)
            log.error("a sample window of %d rows could not be written (%s): dropped", n,
                      exc.strerror or type(exc).__name__)
            return None
        self._bytes_per_row = max(1.0, path.stat().st_size / n)
        self.metrics.samples_written.inc(n)
        self._enforce_disk_bound()
        return path

    def _make_room(self, rows: int) -> None:
        """Drop the oldest windows (counted) until the volume has room for a window of `rows` rows."""
        needed = rows * self._bytes_per_row * 1.5 + 65536
        free = shutil.disk_usage(self.folder).free
        windows = self.windows()
        while windows and free < needed:
            oldest = windows.pop(0)
            size = oldest.stat().st_size
            self.metrics.samples_dropped.labels("disk_space").inc(window_rows(oldest))
            log.warning("the state volume has %d bytes free: dropped the oldest window %s", free, oldest.name)
            oldest.unlink(missing_ok=True)
            free += size

    def windows(self) -> list[Path]:
        """Finished window files, oldest first."""
        found = [(int(m["start"]), p.name, p) for p in self.folder.glob("*.parquet") if (m := WINDOW_RE.match(p.name))]
        return [p for _, _, p in sorted(found)]

    def _enforce_disk_bound(self) -> None:
        windows = self.windows()
        total = sum(p.stat().st_size for p in windows)
        while windows and total > self.max_bytes:
            oldest = windows.pop(0)
            total -= oldest.stat().st_size
            self.metrics.samples_dropped.labels("buffer_full").inc(window_rows(oldest))
            log.warning("sample buffer over %d bytes: dropped window %s", self.max_bytes, oldest.name)
            oldest.unlink(missing_ok=True)
        self.metrics.buffered_windows.set(len(windows))

    def _run(self) -> None:
        while not self._stop.wait(self.window_seconds):
            try:
                self.flush()
            except Exception:  # a full disk must not kill sampling for good
                log.exception("writing a sample window failed")

    def stop(self) -> None:
        super().stop()
        self.flush()
