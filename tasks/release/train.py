"""Training of the two model families and their evaluation on held-out data.

Pure functions: nothing here talks to MLflow or Prefect, so a retry of a logging step never
retrains and the functions can be tested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score
from sklearn.model_selection import train_test_split
from sklearn.utils.class_weight import compute_sample_weight

from edgewave.tasks.release.data import FEATURES, TARGET, fingerprint
from edgewave.tasks.release.features import Features

Family = Literal["sklearn", "torch"]


@dataclass(frozen=True)
class Split:
    """Train / validation (threshold choice) / held-out test of the raw columns, the features a
    model sees (raw + derived), and the training fingerprint."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    data_fingerprint: str
    train_frame: pd.DataFrame = field(repr=False)
    features: Features = field(default=None, repr=False)  # type: ignore[assignment]


@dataclass(frozen=True)
class Metrics:
    pr_auc: float
    f1: float
    recall: float
    precision: float
    threshold: float
    positives: int
    rows: int

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in self.__dict__.items()}


@dataclass
class TrainedModel:
    """A fitted model with the probability function its ONNX export must reproduce."""

    family: Family
    model: Any
    predict_proba: Callable[[np.ndarray], np.ndarray]
    params: dict[str, Any]
    metrics: Metrics


def split_data(frame: pd.DataFrame, seed: int = 0, features: Features | None = None, target: str = TARGET) -> Split:
    """70/15/15 stratified split of the raw columns; the fingerprint covers exactly the rows trained on.

    `features` (raw columns and derived expressions, from the dataset spec) defaults to the raw
    AI4I columns with no derived features.
    """
    features = features or Features(FEATURES)
    x = frame[list(features.raw)].to_numpy(dtype=np.float32)
    y = frame[target].to_numpy(dtype=np.int64)
    if len(np.unique(y)) < 2 or y.sum() < 10:
        raise ValueError(f"training data needs both classes with at least 10 failures; got {int(y.sum())} failures")
    idx = np.arange(len(frame))
    train_idx, rest = train_test_split(idx, test_size=0.3, stratify=y, random_state=seed)
    val_idx, test_idx = train_test_split(rest, test_size=0.5, stratify=y[rest], random_state=seed)
    train_frame = frame.iloc[train_idx][[*features.raw, target]].reset_index(drop=True)
    return Split(
        x[train_idx], y[train_idx], x[val_idx], y[val_idx], x[test_idx], y[test_idx],
        data_fingerprint=fingerprint(train_frame), train_frame=train_frame, features=features,
    )


def best_f1_threshold(y: np.ndarray, proba: np.ndarray) -> float:
    """Decision threshold that maximises F1 on validation data (failures are rare)."""
    candidates = np.unique(np.round(proba, 4))
    if len(candidates) > 400:
        candidates = np.quantile(proba, np.linspace(0.5, 0.999, 400))
    scores = [f1_score(y, proba >= t, zero_division=0) for t in candidates]
    return float(candidates[int(np.argmax(scores))]) if scores else 0.5


def evaluate(y: np.ndarray, proba: np.ndarray, threshold: float) -> Metrics:
    """Metrics of the failure class; the same function scores sklearn, torch and ONNX outputs."""
    if not np.all(np.isfinite(proba)):
        raise ValueError("evaluate: probabilities contain NaN or infinity")
    pred = proba >= threshold
    return Metrics(
        pr_auc=float(average_precision_score(y, proba)),
        f1=float(f1_score(y, pred, zero_division=0)),
        recall=float(recall_score(y, pred, zero_division=0)),
        precision=float(precision_score(y, pred, zero_division=0)),
        threshold=float(threshold),
        positives=int(y.sum()),
        rows=int(len(y)),
    )


def _finish(family: Family, model: Any, proba_fn: Callable[[np.ndarray], np.ndarray],
            params: dict[str, Any], split: Split) -> TrainedModel:
    threshold = best_f1_threshold(split.y_val, proba_fn(split.x_val))
    metrics = evaluate(split.y_test, proba_fn(split.x_test), threshold)
    return TrainedModel(family, model, proba_fn, params, metrics)


def train_sklearn(split: Split, seed: int = 0, n_estimators: int = 200, learning_rate: float = 0.1,
                  max_depth: int = 3) -> TrainedModel:
    """Gradient-boosted trees; class imbalance handled by balanced sample weights.

    (HistGradientBoosting would be faster, but skl2onnx 1.20 cannot convert scikit-learn
    1.9's version of it.)
    """
    params = {"family": "sklearn", "estimator": "GradientBoostingClassifier", "n_estimators": n_estimators,
              "learning_rate": learning_rate, "max_depth": max_depth, "sample_weight": "balanced", "seed": seed}
    model = GradientBoostingClassifier(
        n_estimators=n_estimators, learning_rate=learning_rate, max_depth=max_depth, random_state=seed,
    )
    augment = split.features.augment
    model.fit(augment(split.x_train), split.y_train, sample_weight=compute_sample_weight("balanced", split.y_train))
    return _finish("sklearn", model, lambda x: model.predict_proba(augment(x))[:, 1], params, split)


def train_torch(split: Split, seed: int = 0, epochs: int = 60, hidden: tuple[int, ...] = (64, 32),
                lr: float = 3e-3, batch_size: int = 256) -> TrainedModel:
    """An MLP over raw + derived features; the scaling lives inside the module.

    Class imbalance is handled by the positive-class weight of the loss.
    """
    import torch

    from edgewave.tasks.release.torch_model import FailureMLP

    torch.manual_seed(seed)
    augment = split.features.augment
    model = FailureMLP.fit_scaler(augment(split.x_train), hidden)
    x = torch.from_numpy(augment(split.x_train))
    y = torch.from_numpy(split.y_train.astype(np.float32))
    positives = float(split.y_train.sum())
    pos_weight = torch.tensor((len(split.y_train) - positives) / max(positives, 1.0))
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-5)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model.logits(x[batch]), y[batch])
            loss.backward()
            optimiser.step()
    model.eval()

    def proba(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(augment(rows)))[:, 1].double().numpy()

    params = {"family": "torch", "estimator": "FailureMLP", "hidden": list(hidden), "epochs": epochs, "lr": lr,
              "batch_size": batch_size, "pos_weight": float(pos_weight), "seed": seed}
    return _finish("torch", model, proba, params, split)


def pick_champion(candidates: list[TrainedModel]) -> TrainedModel:
    """Higher PR-AUC on the held-out split wins; F1 breaks ties."""
    if not candidates:
        raise ValueError("pick_champion: no candidates")
    return max(candidates, key=lambda m: (m.metrics.pr_auc, m.metrics.f1))
