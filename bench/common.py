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
