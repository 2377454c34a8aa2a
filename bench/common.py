"""What several benchmarks share."""

from __future__ import annotations

import json
import time
from pathlib import Path


def prefect_api_startup_seconds() -> float:
    """Run an empty flow: starts Prefect's temporary API (a deployed flow does not pay this), timed."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> None:
        return None

    start = time.perf_counter()
    warm_up()
    return time.perf_counter() - start


def write_results(path: Path, results: dict) -> None:
    """Write a benchmark's results as JSON (targets as plain booleans) and say which targets were met."""
    results["targets"] = {k: bool(v) for k, v in results.get("targets", {}).items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    for target, met in results["targets"].items():
        print(f"{'MET ' if met else 'MISS'} {target}")
    print(f"written to {path}")


def signed_sklearn_bundles(settings, versions: list[int], seed: int = 1, reference_rows: int = 1000) -> list[Path]:
    """Train the AI4I tree model once and write it as signed bundles of each version (the same
    model.onnx under several versions: what a site pulls, verifies and applies), as the release does."""
    from edgewave.tasks.data.ai4i import generate
    from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
    from edgewave.tasks.release.export import export_model
    from edgewave.tasks.release.train import split_data, train_sklearn

    split = split_data(generate(10_000, seed), 0)
    trained = train_sklearn(split)
    exported = export_model(trained, split.x_test, split.y_test)
    key = load_or_create_signing_key(settings.signing_key)
    folders = []
    for version in versions:
        manifest = build_manifest(
            name=settings.model_name, version=version, family="sklearn", model=exported.model, int8_model=None,
            train_frame=split.train_frame, threshold=trained.metrics.threshold, metrics=trained.metrics.as_dict(),
            data_fingerprint=split.data_fingerprint, parity_max_abs_diff=exported.parity_max_abs_diff,
            reference_rows=reference_rows)
        folders.append(write_bundle(settings.home / "bundles" / settings.model_name / f"v{version}", manifest,
                                    exported.model, None, key))
    return folders
