"""Benchmark: a fleet drift check of 100 sites × 5,000 rows, edgewave's drift-monitor flow vs a
plain per-site Evidently loop, in this one process on the same windows.

Both read every site's Parquet windows from the monitoring store, compare them with the same
training reference under the same Evidently configuration, and save one HTML report per
site. The plain loop does it site after site in this process; the flow maps per-site Prefect
tasks over a process pool (one worker per core) and adds the ledger, the fleet summary, the
MLflow run and the Prefect artifact. The ratio is plain / flow (above 1: the flow is faster).
Prefect's temporary API start-up is reported on its own: a deployed flow does not pay it.

    .venv/bin/python -m bench.drift [--sites 100] [--rows 5000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

from bench.common import prefect_api_startup_seconds

RESULTS = Path(__file__).parent / "results" / "drift.json"
ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = [("sensor_calibration_offset", {"offset": 5.0}), ("worn_tool_regime", {}), ("product_mix_change", {}),
             ("ambient_temperature_shift", {})]


def build_world(home: Path, sites: int, rows: int, drifted_every: int) -> tuple[object, dict[str, str]]:
    """A signed v1 bundle in the store and every site's windows shipped; returns (settings, drifted)."""
    import yaml

    from edgewave.serving.bundle import load_trusted_keys
    from edgewave.serving.model import load_model
    from edgewave.tasks.data.ai4i import generate, scenario
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
    from edgewave.tasks.release.export import export_model
    from edgewave.tasks.release.train import split_data, train_sklearn
    from edgewave.tasks.sim.windows import ship_windows

    base = yaml.safe_load((ROOT / "deployments" / "fleet.yaml").read_text())
    base["fleet"] = {"sites": [{"id": f"site-{i:03d}", "kind": "agent", "metrics_url": f"http://127.0.0.1:9/{i}"}
                               for i in range(sites)]}
    base["rollout"]["waves"] = [{"name": "all", "percent": 100}]
    (home / "fleet.yaml").parent.mkdir(parents=True, exist_ok=True)
    (home / "fleet.yaml").write_text(yaml.safe_dump(base))
    settings = Settings(home=home, fleet_path=home / "fleet.yaml")
    split = split_data(generate(10_000, 42), 0)
    trained = train_sklearn(split)
    exported = export_model(trained, split.x_test, split.y_test)
    manifest = build_manifest(
        name=settings.model_name, version=1, family="sklearn", model=exported.model, int8_model=None,
        train_frame=split.train_frame, threshold=trained.metrics.threshold, metrics=trained.metrics.as_dict(),
        data_fingerprint=split.data_fingerprint, parity_max_abs_diff=exported.parity_max_abs_diff, reference_rows=5000)
    folder = write_bundle(home / "bundles" / settings.model_name / "v1", manifest, exported.model, None,
                          load_or_create_signing_key(settings.signing_key))
    (home / "monitoring").mkdir(parents=True, exist_ok=True)
    model = load_model(folder, load_trusted_keys(settings.trusted_keys))
    drifted = {}
    for i in range(sites):
        name = None
        if i % drifted_every == drifted_every - 1:
            name, params = SCENARIOS[(i // drifted_every) % len(SCENARIOS)]
            drifted[f"site-{i:03d}"] = name
        frame = generate(rows, 1000 + i, scenario(name, **params) if name else None)
        ship_windows(settings.monitoring_store, f"site-{i:03d}", frame, model, window_rows=1000)
    return settings, drifted


def plain_loop(settings, sites: list[str], out: Path) -> tuple[float, list[str]]:
    """What a team writes first: for each site, read its windows, run Evidently, save the HTML."""
    from edgewave.tasks.drift.checks import column_results, run_evidently, thresholds
    from edgewave.tasks.drift.reference import reference_for
    from edgewave.tasks.drift.steps import policy_for
    from edgewave.tasks.platform.fleetfile import load_fleet_file
    from edgewave.tasks.platform.monitoring import MonitoringStore, SiteLedger

    policy = policy_for(settings, load_fleet_file(settings.fleet_path).drift)
    started = time.perf_counter()
    flagged = []
    for site in sites:
        store = MonitoringStore.of(settings)
        frame, _ = store.read_windows(store.new_windows(site, SiteLedger()))
        reference = reference_for(settings, settings.model_name, int(frame["model_version"].iloc[0]))
        per_column = thresholds(policy, reference.features)
        snapshot = run_evidently(frame.tail(policy.max_rows), reference.frame, per_column, policy.drift_share,
                                 policy.method)
        results = column_results(snapshot.dict())
        if sum(results[c].drifted for c in reference.features) / len(reference.features) >= policy.drift_share:
            flagged.append(site)
        snapshot.save_html(str(out / f"{site}.html"))
    return time.perf_counter() - started, flagged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=100)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--drifted-every", type=int, default=10, help="Every n-th site gets a drift scenario.")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory(prefix="edgewave-bench-drift-") as tmp:
        home = Path(tmp) / "home"
        os.environ["EDGEWAVE_HOME"] = str(home)
        from edgewave.tasks.platform.settings import Settings

        Settings(home=home).apply_runtime_environment()
        t = time.perf_counter()
        settings, drifted = build_world(home, args.sites, args.rows, args.drifted_every)
        setup_s = time.perf_counter() - t
        sites = [f"site-{i:03d}" for i in range(args.sites)]
        print(f"{args.sites} sites x {args.rows} rows shipped in {setup_s:.1f}s; {len(drifted)} drifted")

        t = time.perf_counter()
        import evidently  # noqa: F401  (the loop pays its import once, as the flow's workers do)
        evidently_import_s = time.perf_counter() - t
        (Path(tmp) / "plain").mkdir()
        plain_s, plain_flagged = plain_loop(settings, sites, Path(tmp) / "plain")
        print(f"plain Evidently loop: {plain_s:.1f}s, flagged {len(plain_flagged)}")

        api_start_s = prefect_api_startup_seconds()

        from edgewave.flows.drift import drift_monitor
        from edgewave.tasks.platform.settings import use

        t = time.perf_counter()
        with use(settings):
            summary = drift_monitor()
        flow_s = time.perf_counter() - t
        print(f"edgewave drift-monitor flow: {flow_s:.1f}s, drifted {len(summary.sites_drifted)}")
        per_site = sorted(c.seconds for c in summary.sites if c.status == "checked")

    result = {
        "benchmark": "drift", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "sites": args.sites, "rows_per_site": args.rows, "windows_per_site": -(-args.rows // 1000),
        "drifted_sites": len(drifted),
        "edgewave_fleet_check_s": round(flow_s, 2),
        "plain_evidently_loop_s": round(plain_s, 2),
        "ratio_plain_over_edgewave": round(plain_s / flow_s, 2),
        "target_fleet_check_s": 60, "target_met": flow_s < 60,
        "per_site_evidently_s": {"median": round(per_site[len(per_site) // 2], 3), "max": round(per_site[-1], 3)},
        "process_pool_workers": settings.drift_workers or os.cpu_count(),
        "prefect_temporary_api_start_s": round(api_start_s, 2),
        "evidently_import_s": round(evidently_import_s, 2),
        "setup_ship_windows_s": round(setup_s, 2),
        "detected": {"expected": sorted(drifted), "edgewave": sorted(summary.sites_drifted),
                     "plain_loop": sorted(plain_flagged)},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("edgewave_fleet_check_s", "plain_evidently_loop_s",
                                              "ratio_plain_over_edgewave", "target_met")}))


if __name__ == "__main__":
    main()
