"""Where drift checks get their data: sample windows in the monitoring store, the per-site
ledger of windows already checked, and the training reference of the model that served them.

Sites upload a window file once it is complete (and re-upload the same name after a failed
confirmation), so "which windows has a check already counted" is a set of file names per site.
A window that arrives late (a site that was offline) has an old timestamp but a new name: it
is counted by the next check, never twice. The ledger only remembers names within
`LEDGER_HORIZON_DAYS`; older windows that never arrived are ignored and counted as such.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from edgewave.serving.bundle import parse_public_keys
from edgewave.serving.model import load_model
from edgewave.serving.sampler import WINDOW_RE
from edgewave.serving.transport import download_bundle
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.bundle import bundle_url, trusted_public_keys

LEDGER_HORIZON_DAYS = 30
FEEDBACK_ROOT = "_feedback"  # site ids start with a letter or digit, so this never clashes


class WindowCheck(BaseModel):
    """One site check window as the ledger remembers it."""

    check_id: str
    model_version: int
    rows: int
    drifted: bool


class SiteLedger(BaseModel):
    """Per-site drift state: window files already counted and the recent check history."""

    seen: dict[str, int] = Field(default_factory=dict, description="window file name → its start (ms)")
    history: list[WindowCheck] = Field(default_factory=list)

    def consecutive_drifted(self, version: int) -> int:
        """Drifted windows in a row at the end of the history, all on `version`."""
        count = 0
        for window in reversed(self.history):
            if window.model_version != version or not window.drifted:
                break
            count += 1
        return count


def ledger_path(settings: Settings, site_id: str) -> Path:
    return settings.home / "drift" / "sites" / f"{site_id}.json"


def load_ledger(settings: Settings, site_id: str) -> SiteLedger:
    path = ledger_path(settings, site_id)
    if not path.exists():
        return SiteLedger()
    return SiteLedger.model_validate_json(path.read_text())


def save_ledger(settings: Settings, site_id: str, ledger: SiteLedger, keep_history: int = 50) -> None:
    """Write atomically; forget names past the horizon and all but the last `keep_history` checks."""
    horizon_ms = (time.time() - LEDGER_HORIZON_DAYS * 86_400) * 1000
    pruned = SiteLedger(seen={k: v for k, v in ledger.seen.items() if v >= horizon_ms},
                        history=ledger.history[-keep_history:])
    _write_atomic(ledger_path(settings, site_id), pruned.model_dump_json(indent=1))


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


@dataclass(frozen=True)
class NewWindows:
    """Window files of a site not yet counted by any check."""

    files: dict[str, int]  # name → start (ms)
    urls: list[str]
    too_old: int  # windows older than the ledger horizon, ignored


def new_windows(store_url: str, site_id: str, ledger: SiteLedger) -> NewWindows:
    """List the site's window files in the store that the ledger has not seen."""
    fs, root = fsspec.core.url_to_fs(store_url)
    folder = f"{root.rstrip('/')}/{site_id}"
    if not fs.exists(folder):
        return NewWindows({}, [], 0)
    horizon_ms = (time.time() - LEDGER_HORIZON_DAYS * 86_400) * 1000
    files: dict[str, int] = {}
    urls: list[str] = []
    too_old = 0
    for entry in sorted(fs.ls(folder, detail=False)):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        match = WINDOW_RE.match(name)
        if not match or match["site"] != site_id or name in ledger.seen:
            continue
        if int(match["start"]) < horizon_ms:
            too_old += 1
            continue
        files[name] = int(match["start"])
        urls.append(entry)
    return NewWindows(files, urls, too_old)


def read_windows(store_url: str, windows: NewWindows) -> tuple[pd.DataFrame, dict[str, str]]:
    """All rows of the windows, each sample id once (a re-uploaded window is not counted twice),
    and the windows that could not be read (name → why): one corrupt file must not block a site."""
    import pyarrow.parquet as pq

    fs, _ = fsspec.core.url_to_fs(store_url)
    frames, unreadable = [], {}
    for url in windows.urls:
        try:
            with fs.open(url, "rb") as handle:
                frames.append(pq.read_table(handle).to_pandas())
        except Exception as exc:  # pyarrow raises several types for a damaged file
            unreadable[url.rsplit("/", 1)[-1]] = f"{type(exc).__name__}: {exc}"
    if not frames:
        return pd.DataFrame(), unreadable
    frame = pd.concat(frames, ignore_index=True)
    return frame.drop_duplicates("sample_id", keep="first").reset_index(drop=True), unreadable


@dataclass(frozen=True)
class ReferenceData:
    """The training reference of one model version, scored by that version's own model."""

    version: int
    features: tuple[str, ...]
    frame: pd.DataFrame  # feature columns + "probability"
    threshold: float


def reference_for(settings: Settings, model_name: str, version: int) -> ReferenceData:
    """Download (once per state dir), verify and score the bundle's training reference."""
    return _reference(str(settings.home), settings.bundle_store, trusted_public_keys(settings), model_name, version)


@lru_cache(maxsize=8)
def _reference(home: str, store: str, keys: str, model_name: str, version: int) -> ReferenceData:
    folder = Path(home) / "drift" / "bundles" / model_name / f"v{version}"
    if not folder.exists():
        partial = Path(tempfile.mkdtemp(dir=_ensure(folder.parent), prefix=f".v{version}-"))
        try:
            download_bundle(bundle_url(store, model_name, version), partial)
            try:
                os.rename(partial, folder)
            except OSError:  # another process got there first; its copy is the same bundle
                pass
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    model = load_model(folder, parse_public_keys(keys))  # verifies signature and hashes
    columns = model.manifest.reference.columns
    frame = pd.DataFrame({name: np.asarray(columns[name], dtype=np.float32) for name in model.feature_names})
    frame["probability"] = model.failure_probability(frame.to_numpy(dtype=np.float32)).astype(np.float32)
    return ReferenceData(version, model.feature_names, frame, model.threshold)


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write_feedback(store_url: str, site_id: str, frame: pd.DataFrame) -> str:
    """A maintenance-log export: rows a site saw with the outcome the crew recorded."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(store_url)
    folder = f"{root.rstrip('/')}/{FEEDBACK_ROOT}/{site_id}"
    fs.makedirs(folder, exist_ok=True)
    path = f"{folder}/{int(time.time() * 1000)}-n{len(frame)}.parquet"
    with fs.open(path, "wb") as handle:
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), handle)
    return path


def read_feedback(store_url: str, max_rows_per_site: int) -> pd.DataFrame:
    """The most recent labelled rows of every site (newest files first, up to the cap)."""
    import pyarrow.parquet as pq

    fs, root = fsspec.core.url_to_fs(store_url)
    base = f"{root.rstrip('/')}/{FEEDBACK_ROOT}"
    if not fs.exists(base):
        return pd.DataFrame()
    frames = []
    for site_folder in sorted(fs.ls(base, detail=False)):
        rows = 0
        for path in sorted(fs.ls(site_folder, detail=False), reverse=True):
            if rows >= max_rows_per_site or not path.endswith(".parquet"):
                continue
            with fs.open(path, "rb") as handle:
                part = pq.read_table(handle).to_pandas()
            frames.append(part.head(max_rows_per_site - rows))
            rows += len(frames[-1])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def write_json(path: Path, payload: dict) -> Path:
    _write_atomic(path, json.dumps(payload, indent=1, default=str))
    return path
