"""The monitoring store, as drift checks use it: sites' sample windows, the maintenance-log
feedback, and the drift state every checker shares (per-site ledgers, HTML reports, the last
drift event), all in EDGEWAVE_MONITORING_STORE under `_drift/`.

Keeping that state in the store, not in a process's EDGEWAVE_HOME, is what lets per-site
checks run on Dask workers on other machines: whichever worker checks a site reads and writes
that site's ledger there, and the flow finds every report there.

Sites upload a window once it is complete (under a hidden name, then renamed, so no reader
sees half of one), and re-upload the same name after a failed confirmation; "which windows has
a check already counted" is therefore a set of file names per site. A window that arrives late
(a site that was offline) has an old timestamp but a new name: the next check counts it, never
twice. The ledger remembers names within `LEDGER_HORIZON_DAYS`; older windows that never
arrived are ignored and counted as such.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, Field

from edgewave.serving.access import RemoteAccess
from edgewave.serving.redact import redact
from edgewave.serving.sampler import WINDOW_RE
from edgewave.serving.stores import PARTIAL_PREFIX, open_store, plain_files, put_atomic

LEDGER_HORIZON_DAYS = 30
FEEDBACK_ROOT = "_feedback"  # site ids start with a letter or digit, so these never clash
DRIFT_ROOT = "_drift"
REPORTS = (DRIFT_ROOT, "reports")
EVENTS = (DRIFT_ROOT, "events.json")


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
    generation: int = Field(default=0, description="Bumped by every save: a save from a stale read is refused.")

    def consecutive_drifted(self, version: int) -> int:
        """Drifted windows in a row at the end of the history, all on `version`."""
        count = 0
        for window in reversed(self.history):
            if window.model_version != version or not window.drifted:
                break
            count += 1
        return count


class LedgerConflict(RuntimeError):
    """Another check saved this site's ledger since this one read it: its result is not recorded."""


@dataclass(frozen=True)
class NewWindows:
    """Window files of a site not yet counted by any check."""

    files: dict[str, int]  # name → start (ms)
    paths: list[str]
    too_old: int  # windows older than the ledger horizon, ignored
    skipped: dict[str, str] = field(default_factory=dict)  # name → why it is no window (a link, a folder, …)


@dataclass(frozen=True)
class MonitoringStore:
    """The store's URL and this process's credentials for it (picklable: a Dask worker opens it itself)."""

    url: str
    access: RemoteAccess = field(default_factory=RemoteAccess)

    @classmethod
    def of(cls, settings) -> MonitoringStore:
        return cls(settings.monitoring_store, settings.remote_access())

    def _open(self):
        return open_store(self.url, self.access)

    def path(self, *parts: str) -> str:
        _, root = self._open()
        return "/".join([root.rstrip("/"), *parts])

    def link(self, *parts: str) -> str:
        """Where a person finds `parts` (credentials redacted)."""
        return redact("/".join([self.url.rstrip("/"), *parts]))

    # -- sample windows --------------------------------------------------------------------------
    def new_windows(self, site_id: str, ledger: SiteLedger) -> NewWindows:
        """The site's complete window files that the ledger has not seen (uploads in flight are hidden)."""
        fs, root = self._open()
        folder = f"{root.rstrip('/')}/{site_id}"
        if not fs.exists(folder):
            return NewWindows({}, [], 0)
        horizon_ms = (time.time() - LEDGER_HORIZON_DAYS * 86_400) * 1000
        files: dict[str, int] = {}
        paths: list[str] = []
        too_old = 0
        entries, skipped = plain_files(fs, folder)
        for entry in entries:
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            match = WINDOW_RE.match(name)
            if name.startswith(PARTIAL_PREFIX) or not match or match["site"] != site_id or name in ledger.seen:
                continue
            if int(match["start"]) < horizon_ms:
                too_old += 1
                continue
            files[name] = int(match["start"])
            paths.append(entry)
        return NewWindows(files, paths, too_old, {n: why for n, why in skipped.items() if n not in ledger.seen})

    def read_windows(self, windows: NewWindows) -> tuple[pd.DataFrame, dict[str, str]]:
        """All rows of the windows, each sample id once (a re-uploaded window is not counted twice),
        and the windows that could not be read (name → why): one corrupt file must not block a site."""
        import pyarrow.parquet as pq

        fs, _ = self._open()
        frames, unreadable = [], {}
        for path in windows.paths:
            try:
                with fs.open(path, "rb") as handle:
                    frames.append(pq.read_table(handle).to_pandas())
            except Exception as exc:  # pyarrow raises several types for a damaged file
                unreadable[path.rsplit("/", 1)[-1]] = f"{type(exc).__name__}: {exc}"
        if not frames:
            return pd.DataFrame(), unreadable
        frame = pd.concat(frames, ignore_index=True)
        return frame.drop_duplicates("sample_id", keep="first").reset_index(drop=True), unreadable

    # -- maintenance-log feedback ------------------------------------------------------------------
    def write_feedback(self, site_id: str, frame: pd.DataFrame) -> str:
        """A maintenance-log export: rows a site saw with the outcome the crew recorded."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="edgewave-feedback-") as tmp:
            local = Path(tmp) / f"{int(time.time() * 1000)}-n{len(frame)}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), local)
            return self.put(local, FEEDBACK_ROOT, site_id, local.name)

    def read_feedback(self, max_rows_per_site: int) -> pd.DataFrame:
        """The most recent labelled rows of every site (newest files first, up to the cap)."""
        import pyarrow.parquet as pq

        fs, root = self._open()
        base = f"{root.rstrip('/')}/{FEEDBACK_ROOT}"
        if not fs.exists(base):
            return pd.DataFrame()
        frames = []
        for site_folder in sorted(fs.ls(base, detail=False)):
            rows = 0
            for path in reversed(plain_files(fs, site_folder)[0]):  # never through a link a site planted
                name = path.rsplit("/", 1)[-1]
                if rows >= max_rows_per_site or not name.endswith(".parquet") or name.startswith(PARTIAL_PREFIX):
                    continue
                with fs.open(path, "rb") as handle:
                    part = pq.read_table(handle).to_pandas()
                frames.append(part.head(max_rows_per_site - rows))
                rows += len(frames[-1])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    # -- shared drift state --------------------------------------------------------------------------
    def put(self, local: Path, *parts: str) -> str:
        """Upload a file whole (hidden name, then renamed); returns its path in the store."""
        fs, root = self._open()
        target = "/".join([root.rstrip("/"), *parts])
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        return put_atomic(fs, local, target)

    def get(self, local: Path, *parts: str) -> Path:
        fs, _ = self._open()
        fs.get_file(self.path(*parts), str(local))
        return local

    def read_json(self, *parts: str) -> dict | None:
        fs, _ = self._open()
        path = self.path(*parts)
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as handle:
            return json.loads(handle.read())

    def write_json(self, payload: dict, *parts: str) -> str:
        with tempfile.TemporaryDirectory(prefix="edgewave-state-") as tmp:
            local = Path(tmp) / parts[-1]
            local.write_text(json.dumps(payload, indent=1, default=str))
            return self.put(local, *parts)

    def folders(self, *parts: str) -> list[str]:
        """Names of the sub-folders of `parts`, sorted."""
        fs, _ = self._open()
        path = self.path(*parts)
        if not fs.exists(path):
            return []
        return sorted(e["name"].rstrip("/").rsplit("/", 1)[-1] for e in fs.ls(path, detail=True)
                      if e["type"] == "directory")

    def remove(self, *parts: str) -> None:
        fs, _ = self._open()
        fs.rm(self.path(*parts), recursive=True)


def load_ledger(store: MonitoringStore, site_id: str) -> SiteLedger:
    data = store.read_json(DRIFT_ROOT, "ledgers", f"{site_id}.json")
    return SiteLedger.model_validate(data) if data else SiteLedger()


def save_ledger(store: MonitoringStore, site_id: str, ledger: SiteLedger, keep_history: int = 50) -> SiteLedger:
    """Save unless another check saved since `ledger` was read (then LedgerConflict); forget names past
    the horizon and all but the last `keep_history` checks."""
    current = load_ledger(store, site_id)
    if current.generation != ledger.generation:
        raise LedgerConflict(f"{site_id}: another drift check recorded windows since this one started "
                             f"(ledger generation {current.generation}, read {ledger.generation}); not counted twice")
    horizon_ms = (time.time() - LEDGER_HORIZON_DAYS * 86_400) * 1000
    saved = SiteLedger(seen={k: v for k, v in ledger.seen.items() if v >= horizon_ms},
                       history=ledger.history[-keep_history:], generation=ledger.generation + 1)
    store.write_json(saved.model_dump(), DRIFT_ROOT, "ledgers", f"{site_id}.json")
    return saved


def last_drift_check(store: MonitoringStore, model: str) -> dict | None:
    """The newest drift-check summary of `model` in the monitoring store."""
    for check_id in reversed(store.folders(*REPORTS)):
        summary = store.read_json(*REPORTS, check_id, "summary.json")
        if summary and summary.get("model") == model:
            return summary
    return None
