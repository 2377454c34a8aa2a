"""Benchmark: the rollout flow's own cost at 50, 500, 2,000 and 5,000 sites.

Sites are simulated (bench/sitesim.py, one HTTP port, a path per site) and follow the Git
desired state instantly; bake time is zero and the analysis interval minimal, so what is
measured is control overhead: planning, Git commits, convergence polling and scraping for
canary analysis, with Prefect's task runs, the registry and the timeline around them.
Waves: 1 %, 10 %, 50 %, the rest. Written to bench/results/rollout_scale.json.

    .venv/bin/python -m bench.rollout_scale [--sizes 50 500 2000 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "rollout_scale.json"

from edgewave.serving.desired import DesiredState
from edgewave.tasks.platform.settings import Settings, use
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from tests.helpers import free_port, http_ok, register_versions, stop, wait_for

SHA = "d" * 64


def fleet_document(n: int, port: int) -> dict:
    return {
        "fleet": {"sites": [{"id": f"sim-{i:05d}", "kind": "agent", "labels": {"plant": f"p{i % 20}"},
                             "metrics_url": f"http://127.0.0.1:{port}/sim-{i:05d}/metrics"} for i in range(n)]},
        "rollout": {"waves": [{"name": "canary", "percent": 1}, {"name": "ten", "percent": 10},
                              {"name": "half", "percent": 50}, {"name": "rest", "percent": 100}],
                    "bake_seconds": 0, "concurrency": 32, "convergence_deadline_seconds": 120,
                    "analysis": {"interval_seconds": 0.2, "measurements": 1, "min_requests_per_site": 5}},
    }


def one_size(n: int, work: Path) -> dict:
    """The rollout flow (the one users run) from v1 to v2 over `n` simulated sites."""
    from edgewave.flows.rollout import result_of, rollout
    settings = Settings(home=work / f"home-{n}", fleet_path=work / f"fleet-{n}.yaml")
    settings.fleet_path.write_text(json.dumps(fleet_document(n, port := free_port())))
    repo = DesiredStateRepo.of(settings).ensure()
    register_versions(settings, {v: {"bundle_url": f"file:///sim/v{v}", "onnx_sha256": SHA} for v in (1, 2)},
                      production=1)
    sim = subprocess.Popen([sys.executable, str(ROOT / "bench" / "sitesim.py"), repo.remote, str(port),
                            settings.fleet_identity()],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/sim-00000/metrics"), 30, "the simulator")
        # everyone on v1 first, as after an earlier rollout
        repo.commit([DesiredState(site=f"sim-{i:05d}", model=settings.model_name, version=1,
                                  bundle_url="file:///sim/v1", sha256=SHA, rollout_id="ro-initial")
                     for i in range(n)], "initial")
        tracemalloc.start()
        started = time.perf_counter()
        begun = datetime.now(UTC)
        with use(settings):
            result = result_of(rollout(2, return_state=True))
        total = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        record = repo.record(result["rollout_id"])
        ends = [datetime.fromisoformat(w["decided_at"]) for w in record["waves"] if w["decided_at"]]
        wave_seconds = [(b - a).total_seconds() for a, b in zip([begun, *ends], ends)]
        return {"sites": n, "status": result["status"], "total_s": round(total, 2),
                "per_wave_s": [round(t, 2) for t in wave_seconds],
                "wave_sizes": [len(w["sites"]) for w in record["waves"]],
                "commits": len(repo.log(result["rollout_id"])),
                "wave_commits": len(repo.log(f"{result['rollout_id']}: wave ")),  # one per wave, whatever its size
                "python_peak_mb": round(peak / 2**20, 1)}
    finally:
        stop(sim)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 500, 2000, 5000])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edgewave-bench-rollout-"))
    Settings(home=work).apply_runtime_environment()  # Prefect's and MLflow's state under work/, before they load
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    rows = []
    for n in args.sizes:
        row = one_size(n, work)
        rows.append(row)
        print(f"{n:>5} sites: {row['status']} in {row['total_s']:.1f}s, waves {row['wave_sizes']} "
              f"took {row['per_wave_s']} s, peak python heap {row['python_peak_mb']} MB", flush=True)
    base = rows[0]
    for row in rows:
        row["seconds_per_site"] = round(row["total_s"] / row["sites"], 4)
        row["growth_vs_smallest"] = round(row["total_s"] / base["total_s"], 2)
        row["size_ratio_vs_smallest"] = round(row["sites"] / base["sites"], 2)
        # after the first wave (which also pays the flow's start): each wave's cost per site of the fleet
        row["later_waves_ms_per_fleet_site"] = [round(1000 * t / row["sites"], 2) for t in row["per_wave_s"][1:]]
    result = {
        "benchmark": "rollout controller overhead vs fleet size (simulated sites, zero bake)",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "process_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "policy": "waves 1 % / 10 % / 50 % / rest; 1 measurement of 0.2 s; 32 concurrent scrapes",
        "sizes": rows,
        "target_500_sites_under_30s": next((r["total_s"] < 30 for r in rows if r["sites"] == 500), None),
        "one_commit_per_wave_at_every_size": all(r["wave_commits"] == len(r["wave_sizes"]) for r in rows),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
