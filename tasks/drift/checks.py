"""Drift per site with Evidently 0.7, and the fleet's verdict under the drift policy.

One Evidently `Report([DataDriftPreset])` per site compares the rows the site sampled with the
training reference in the bundle of the model that served them; the model's probability is
one more column, which gives prediction drift. What comes out is reduced to numbers (share of
drifted input columns, per-column score and method) so the policy and the fleet summary work
on plain data, and the HTML report is kept for a person.

Evidently is imported inside the functions: it takes seconds to import and must never reach
the edge runtime.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, computed_field

from edgewave.tasks.drift.reference import ReferenceData
from edgewave.tasks.platform.fleetfile import DriftPolicy
from edgewave.tasks.platform.monitoring import MonitoringStore, NewWindows, SiteLedger, WindowCheck

PREDICTION = "probability"
EMBEDDING = "embedding"  # an image model's embedding, one input of the drifted share
EMBEDDING_THRESHOLD = 0.6  # ROC AUC of Evidently's classifier telling the site's embeddings from the reference's


class ColumnDrift(BaseModel):
    column: str
    method: str
    score: float
    threshold: float
    drifted: bool

    @property
    def severity(self) -> float:
        """How far past its threshold a column is (1.0 = at it), comparable across methods."""
        if _is_p_value(self.method):
            return math.log10(max(self.score, 1e-300)) / math.log10(self.threshold)
        return self.score / self.threshold


class SiteCheck(BaseModel):
    """One site in one drift check."""

    site: str
    check_id: str
    status: str = Field(description="checked | waiting (too few new rows) | no-data | error")
    detail: str = ""
    rows_new: int = 0
    rows_checked: int = 0
    rows_other_version: int = 0
    windows: int = 0
    model_version: int | None = None
    drifted: bool = False
    drifted_share: float = 0.0
    columns: list[ColumnDrift] = Field(default_factory=list)
    prediction: ColumnDrift | None = None
    confidence_reference: float | None = None
    confidence_current: float | None = None
    consecutive: int = 0
    confirmed: bool = False
    report: str | None = Field(default=None, description="The HTML report, in the monitoring store.")
    seconds: float = 0.0

    @computed_field  # in the stored summary too: `edgewave status` reads it without importing this module
    @property
    def top_features(self) -> list[str]:
        """Drifted input columns, most severe first."""
        return [c.column for c in sorted(self.columns, key=lambda c: -c.severity) if c.drifted]


def _is_p_value(method: str) -> bool:
    return "p_value" in method


def mean_confidence(probability: np.ndarray | pd.Series) -> float:
    """Mean of max(p, 1-p): how sure the model is, whatever it predicts."""
    p = np.asarray(probability, dtype=float)
    return float(np.mean(np.maximum(p, 1 - p))) if len(p) else float("nan")


def thresholds(policy: DriftPolicy, columns: tuple[str, ...]) -> dict[str, float]:
    """Per-column thresholds; a policy naming a column the model does not have is an error (`embedding`
    is an image model's: its classifier's ROC AUC)."""
    unknown = sorted(set(policy.column_thresholds) - set(columns) - {PREDICTION, EMBEDDING})
    if unknown:
        raise ValueError(f"drift.column_thresholds: {unknown} are not inputs of the model ({list(columns)})")
    return {c: policy.column_thresholds.get(c, policy.threshold) for c in (*columns, PREDICTION)}


def run_evidently(current: pd.DataFrame, reference: pd.DataFrame, per_column: dict[str, float],
                  drift_share: float, method: str, embedding: tuple[str, ...] = (),
                  embedding_threshold: float = EMBEDDING_THRESHOLD):
    """Evidently's data drift preset over the given columns, and for an image model its embeddings
    drift metric (a classifier that tries to tell the site's embeddings from the reference's: ROC
    AUC above `embedding_threshold` is drift); returns the snapshot."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import EmbeddingsDrift
    from evidently.metrics.embeddings import ModelDriftMethod
    from evidently.presets import DataDriftPreset

    columns = list(per_column)
    definition = DataDefinition(numerical_columns=columns, embeddings={EMBEDDING: list(embedding)} if embedding else None)
    metrics: list = [DataDriftPreset(columns=columns, drift_share=drift_share, num_method=method,
                                     per_column_threshold=per_column)]
    if embedding:
        metrics.append(EmbeddingsDrift(embeddings_name=EMBEDDING,
                                       drift_method=cast(Any, ModelDriftMethod)(threshold=embedding_threshold)))
    report = Report(metrics)
    kept = [*columns, *embedding]
    # Evidently 0.7: current first, then reference.
    return report.run(Dataset.from_pandas(current[kept], data_definition=definition),
                      Dataset.from_pandas(reference[kept], data_definition=definition))


def column_results(snapshot_dict: dict) -> dict[str, ColumnDrift]:
    """Per-column score, method and threshold from the snapshot's `ValueDrift` metrics."""
    out: dict[str, ColumnDrift] = {}
    for metric in snapshot_dict["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith(":EmbeddingsDrift"):
            threshold, score = float(config["drift_method"]["threshold"]), float(metric["value"])
            out[EMBEDDING] = ColumnDrift(column=EMBEDDING, method="classifier ROC AUC", score=score,
                                         threshold=threshold, drifted=score > threshold)
            continue
        if not config.get("type", "").endswith(":ValueDrift"):
            continue
        method, threshold, score = config["method"], float(config["threshold"]), float(metric["value"])
        drifted = score < threshold if _is_p_value(method) else score >= threshold
        out[config["column"]] = ColumnDrift(column=config["column"], method=method, score=score,
                                            threshold=threshold, drifted=drifted)
    return out


def pick_version(frame: pd.DataFrame) -> tuple[int, pd.DataFrame]:
    """The model version that served most rows, and its rows (a rollout mixes versions)."""
    version = int(frame["model_version"].mode().max())
    return version, frame[frame["model_version"] == version]


def compare(site: str, check_id: str, rows: pd.DataFrame, reference: ReferenceData, policy: DriftPolicy,
            report_path: Path | None) -> SiteCheck:
    """Run Evidently on the newest `max_rows` rows against the reference; the HTML goes to `report_path`."""
    started = time.perf_counter()
    recent = rows.sort_values("timestamp").tail(policy.max_rows)
    per_column = thresholds(policy, reference.features)
    snapshot = run_evidently(recent, reference.frame, per_column, policy.drift_share, policy.method,
                             reference.embedding, policy.column_thresholds.get(EMBEDDING, EMBEDDING_THRESHOLD))
    results = column_results(snapshot.dict())
    judged = (*reference.features, *((EMBEDDING,) if reference.embedding else ()))
    inputs = [results[c] for c in judged if c in results]
    share = sum(c.drifted for c in inputs) / len(judged)
    if report_path is not None:
        report_path.parent.mkdir(parents=True, exist_ok=True)
        snapshot.save_html(str(report_path))
    return SiteCheck(
        site=site, check_id=check_id, status="checked", rows_checked=len(recent), model_version=reference.version,
        drifted=share >= policy.drift_share, drifted_share=share, columns=inputs, prediction=results.get(PREDICTION),
        confidence_reference=mean_confidence(reference.frame[PREDICTION]),
        confidence_current=mean_confidence(recent[PREDICTION]),
        seconds=time.perf_counter() - started,
    )


def check_site(site: str, check_id: str, store: MonitoringStore, ledger: SiteLedger, policy: DriftPolicy,
               reference_of, report_path: Path | None) -> tuple[SiteCheck, SiteLedger]:
    """The whole per-site step, given how to get a version's reference; returns the new ledger.

    New windows are consumed only by a check that ran: with fewer than `min_samples` new
    rows the site waits, and those rows count in the next check together with what arrives.
    """
    windows: NewWindows = store.new_windows(site, ledger)
    not_windows = (f"{len(windows.skipped)} entr{'y' if len(windows.skipped) == 1 else 'ies'} of {site}/ skipped: "
                   + "; ".join(f"{name}: {why}" for name, why in sorted(windows.skipped.items()))) \
        if windows.skipped else ""
    if not windows.files:
        detail = f"{windows.too_old} windows older than the ledger horizon ignored" if windows.too_old else ""
        return SiteCheck(site=site, check_id=check_id, status="no-data",
                         detail="; ".join(filter(None, [detail, not_windows]))), ledger
    frame, unreadable = store.read_windows(windows)
    note = "; ".join(filter(None, [not_windows, (f"{len(unreadable)} unreadable window(s) skipped and left in the "
                                                 "store: " + "; ".join(f"{name}: {why}" for name, why in
                                                                      unreadable.items())) if unreadable else ""]))
    if len(frame) < policy.min_samples:
        return SiteCheck(site=site, check_id=check_id, status="waiting", rows_new=len(frame),
                         windows=len(windows.files) - len(unreadable),
                         detail="; ".join(filter(None, [f"{len(frame)} new rows < min_samples {policy.min_samples}",
                                                        note]))), ledger
    version, rows = pick_version(frame)
    result = compare(site, check_id, rows, reference_of(version), policy, report_path)
    history = [*ledger.history, WindowCheck(check_id=check_id, model_version=version, rows=len(frame),
                                            drifted=result.drifted)]
    updated = SiteLedger(seen={**ledger.seen, **windows.files}, history=history, generation=ledger.generation)
    consecutive = updated.consecutive_drifted(version)
    return result.model_copy(update={
        "rows_new": len(frame), "rows_other_version": len(frame) - len(rows), "detail": note,
        "windows": len(windows.files) - len(unreadable),
        "consecutive": consecutive, "confirmed": consecutive >= policy.consecutive_windows,
    }), updated


class FleetDrift(BaseModel):
    """The fleet's verdict for one check."""

    check_id: str
    model: str
    detected: bool
    reason: str
    sites_checked: int
    sites_drifted: list[str]
    sites_confirmed: list[str]
    sites_waiting: list[str]
    sites_failed: list[str]
    top_features: list[tuple[str, int]] = Field(description="(feature, drifted sites), most sites first")
    sites: list[SiteCheck]
    event_id: str | None = Field(default=None, description="The edgewave.drift.detected event this check emitted.")


def summarise(check_id: str, model: str, checks: list[SiteCheck], policy: DriftPolicy) -> FleetDrift:
    """Sites drifted and confirmed, the top drifted features across them, and the verdict."""
    checked = [c for c in checks if c.status == "checked"]
    drifted = [c for c in checked if c.drifted]
    confirmed = [c.site for c in checked if c.confirmed]
    features = Counter(f for c in drifted for f in c.top_features)
    detected = len(confirmed) >= policy.min_sites
    reason = (f"{len(confirmed)} site(s) drifted for {policy.consecutive_windows}+ windows in a row "
              f"(policy: {policy.min_sites}): {', '.join(confirmed)}" if detected else
              f"{len(confirmed)} confirmed of {policy.min_sites} needed; {len(drifted)} drifted this window")
    return FleetDrift(
        check_id=check_id, model=model, detected=detected, reason=reason, sites_checked=len(checked),
        sites_drifted=[c.site for c in drifted], sites_confirmed=confirmed,
        sites_waiting=[c.site for c in checks if c.status == "waiting"],
        sites_failed=[c.site for c in checks if c.status == "error"],
        top_features=features.most_common(), sites=checks,
    )
