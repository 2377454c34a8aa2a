"""Benchmark: `make run` after `make setup`, phase by phase, against the same loop under the
example policy users copy (deployments/fleet.yaml) as the baseline, run one after the other in
this script, each in a fresh EDGEWAVE_HOME. Written to bench/results/firstrun.json.

`make run` uses deployments/demo-fleet.yaml (the same six sites, shorter bake and measurements,
one drifted window trusted); the baseline runs `edgewave demo loop` with fleet.yaml. The
ratio is baseline / make run (above 1: make run is faster). Phases come from the JSON line
`edgewave demo loop` prints; the total is the wall time of the whole command.

    .venv/bin/python -m bench.firstrun [--runs 5] [--no-baseline]

Five runs in a row (the default) show the spread a newcomer meets, not one lucky run; `under_target`
holds only when every one of them is under 180 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "firstrun.json"
TARGET_SECONDS = 180.0


def one(command: list[str], extra_env: dict[str, str]) -> dict:
    """Run `command` in the checkout with a fresh home; its wall time, phases and exit code."""
    home = Path(tempfile.mkdtemp(prefix="edgewave-firstrun-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWAVE_", "PREFECT_API_URL", "MLFLOW_"))}
    env.update({"EDGEWAVE_HOME": str(home), **extra_env})
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    finally:
        wall = time.perf_counter() - started
        shutil.rmtree(home, ignore_errors=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{"phases"')]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(command)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    reported = json.loads(lines[-1])
    return {"command": " ".join(command), "wall_seconds": round(wall, 1), "loop_seconds": reported["total_seconds"],
            "phases": reported["phases"]}


def spread(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"min": ordered[0], "median": ordered[len(ordered) // 2], "max": ordered[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="make run this many times in a row (fresh home each).")
    parser.add_argument("--no-baseline", action="store_true", help="Measure make run only.")
    args = parser.parse_args()
    runs = []
    for index in range(args.runs):
        run = one(["make", "--no-print-directory", "run"], {})
        print(f"make run {index + 1}/{args.runs}: {run['wall_seconds']:.1f} s ({run['phases']})", flush=True)
        runs.append(run)
    walls = [r["wall_seconds"] for r in runs]
    found = [r["phases"].get("drift checks until found", 0.0) for r in runs]
    result = {"benchmark": f"make run after make setup, {args.runs} times in a row, phase by phase; baseline: the loop "
                           "under deployments/fleet.yaml",
              "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "target_seconds": TARGET_SECONDS, "make_runs": runs,
              "make_run": sorted(runs, key=lambda r: r["wall_seconds"])[len(runs) // 2],  # the median run
              "wall_seconds": spread(walls), "drift_checks_until_found_seconds": spread(found),
              "under_target": all(w < TARGET_SECONDS for w in walls)}
    if not args.no_baseline:
        baseline = one([str(ROOT / ".venv" / "bin" / "edgewave"), "demo", "loop"],
                       {"EDGEWAVE_FLEET_PATH": "deployments/fleet.yaml"})
        print(f"baseline (fleet.yaml): {baseline['wall_seconds']:.1f} s ({baseline['phases']})", flush=True)
        result["baseline"] = baseline
        result["ratio_baseline_over_make_run"] = round(baseline["wall_seconds"] / result["make_run"]["wall_seconds"], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("under_target", "wall_seconds",
                                                              "drift_checks_until_found_seconds",
                                                              "ratio_baseline_over_make_run")}))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
