"""Benchmark: `make run` after `make setup`, phase by phase, against the same loop under the
example policy users copy (deployments/fleet.yaml) as the baseline, run one after the other in
this script, each in a fresh EDGEWAVE_HOME. Written to bench/results/firstrun.json.

`make run` uses deployments/demo-fleet.yaml (the same six sites, shorter bake and measurements,
one drifted window trusted); the baseline runs `edgewave demo loop` with fleet.yaml. The
ratio is baseline / make run (above 1: make run is faster). Phases come from the JSON line
`edgewave demo loop` prints; the total is the wall time of the whole command.

    .venv/bin/python -m bench.firstrun [--no-baseline]
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-baseline", action="store_true", help="Measure make run only.")
    args = parser.parse_args()
    run = one(["make", "--no-print-directory", "run"], {})
    print(f"make run: {run['wall_seconds']:.1f} s ({run['phases']})", flush=True)
    result = {"benchmark": "make run after make setup, phase by phase; baseline: the loop under deployments/fleet.yaml",
              "when": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
              "target_seconds": TARGET_SECONDS, "make_run": run, "under_target": run["wall_seconds"] < TARGET_SECONDS}
    if not args.no_baseline:
        baseline = one([str(ROOT / ".venv" / "bin" / "edgewave"), "demo", "loop"],
                       {"EDGEWAVE_FLEET_PATH": "deployments/fleet.yaml"})
        print(f"baseline (fleet.yaml): {baseline['wall_seconds']:.1f} s ({baseline['phases']})", flush=True)
        result["baseline"] = baseline
        result["ratio_baseline_over_make_run"] = round(baseline["wall_seconds"] / run["wall_seconds"], 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k in ("under_target", "ratio_baseline_over_make_run")}))
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
