"""Benchmark: model quality. The release's champion (the same functions the release flow runs:
the bounded tree search, the MLP, their blend, the choice on validation PR-AUC, the ONNX export
with its derived-feature prefix) against what a user writes in ten lines, a plain
`HistGradientBoostingClassifier()` with default settings on the raw columns, on the same
70/15/15 splits: failure-class PR-AUC on the held-out test split, for the AI4I milling machine
and the centrifugal pump, several seeds. Each difference comes with a 95 % paired bootstrap
interval over the test rows: a test split holds 60-80 failures, so a difference of a few
thousandths is a tie. Written to bench/results/quality.json.

    .venv/bin/python -m bench.quality [--seeds 1 2 3 4 5] [--rows 10000] [--budget 4] [--out FILE]

The search's trials and the blend were chosen on data seeds 11-20, the default seeds here are
1-5; `--seeds 11 12 ... 20 --out bench/results/quality-dev-seeds.json` re-measures the seeds
they were chosen on, without overwriting the benchmark's own result.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "quality.json"
SPECS = {"ai4i": ROOT / "deployments" / "dataset.yaml", "pump": ROOT / "deployments" / "pump-dataset.yaml"}


def one(machine: str, seed: int, rows: int, budget: int) -> dict:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.metrics import average_precision_score

    from edgewave.tasks.data.machines import simulate
    from edgewave.tasks.data.spec import load_spec
    from edgewave.tasks.release.export import export_model, onnx_proba
    from edgewave.tasks.release.features import Features
    from edgewave.tasks.release.train import (
        candidates,
        pick_champion,
        search_trees,
        split_data,
        train_torch,
        trial_name,
    )

    spec = load_spec(SPECS[machine])
    frame = simulate(spec, rows, seed)
    split = split_data(frame, seed, Features.of(spec), spec.target.name)
    started = time.perf_counter()
    trees = search_trees(split, seed, budget)
    champion = pick_champion(candidates(trees, train_torch(split, seed), split))
    exported = export_model(champion, split.x_test, split.y_test, features=split.features)
    edgewave_proba = onnx_proba(exported.model, split.x_test)
    release_s = time.perf_counter() - started
    started = time.perf_counter()
    baseline = HistGradientBoostingClassifier().fit(split.x_train, split.y_train)
    baseline_proba = baseline.predict_proba(split.x_test)[:, 1]
    baseline_s = time.perf_counter() - started
    edgewave_pr_auc = float(average_precision_score(split.y_test, edgewave_proba))
    baseline_pr_auc = float(average_precision_score(split.y_test, baseline_proba))
    low, high = paired_interval(split.y_test, edgewave_proba, baseline_proba, seed)
    return {"machine": machine, "seed": seed, "edgewave_pr_auc": round(edgewave_pr_auc, 4),
            "baseline_pr_auc": round(baseline_pr_auc, 4), "difference": round(edgewave_pr_auc - baseline_pr_auc, 4),
            "difference_95": [round(low, 4), round(high, 4)],
            "champion": champion.params.get("members") or trial_name(champion),
            "search": trees[0].params.get("search"), "validation_pr_auc": round(champion.validation_pr_auc, 4),
            "edgewave_train_s": round(release_s, 1), "baseline_train_s": round(baseline_s, 1),
            "test_positives": int(split.y_test.sum())}


def paired_interval(y, mine, theirs, seed: int, draws: int = 1000) -> tuple[float, float]:
    """95 % interval of PR-AUC(mine) - PR-AUC(theirs) over test rows resampled with replacement
    (both scored on the same resample, so what the two share cancels out)."""
    import numpy as np
    from sklearn.metrics import average_precision_score

    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(draws):
        rows = rng.integers(0, len(y), len(y))
        if y[rows].sum() == 0:
            continue
        differences.append(average_precision_score(y[rows], mine[rows]) - average_precision_score(y[rows], theirs[rows]))
    low, high = np.quantile(differences, [0.025, 0.975])
    return float(low), float(high)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--budget", type=int, default=4)
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    args = parser.parse_args()
    rows = []
    for machine in SPECS:
        for seed in args.seeds:
            row = one(machine, seed, args.rows, args.budget)
            rows.append(row)
            print(f"{machine:>5} seed {seed}: edgewave {row['edgewave_pr_auc']:.4f} vs HistGradientBoosting "
                  f"{row['baseline_pr_auc']:.4f}, difference {row['difference']:+.4f} (95 % {row['difference_95']}); "
                  f"champion {row['champion']}", flush=True)
    summary = {}
    for machine in SPECS:
        mine = [r for r in rows if r["machine"] == machine]
        summary[machine] = {
            "edgewave_mean": round(statistics.mean(r["edgewave_pr_auc"] for r in mine), 4),
            "baseline_mean": round(statistics.mean(r["baseline_pr_auc"] for r in mine), 4),
            "mean_difference": round(statistics.mean(r["difference"] for r in mine), 4),
            "at_least_baseline_every_seed": all(r["difference"] >= 0 for r in mine),
            "seeds_behind": [r["seed"] for r in mine if r["difference"] < 0],
            "significantly_behind_on_any_seed": any(r["difference_95"][1] < 0 for r in mine),
            "better_on_average": statistics.mean(r["difference"] for r in mine) > 0}
    result = {"benchmark": "champion vs a default HistGradientBoostingClassifier, failure-class PR-AUC on the test split",
              "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "rows": args.rows, "split": "70/15/15 stratified, the same for both", "search_budget": args.budget,
              "summary": summary, "runs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=1))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
