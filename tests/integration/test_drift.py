"""Drift checks with real Evidently on windows written by the site's own sampler and shipped
to a file monitoring store, against the reference in a real signed bundle."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgewave.serving.bundle import load_trusted_keys
from edgewave.serving.model import load_model
from edgewave.serving.stores import open_store
from edgewave.tasks.data.ai4i import generate, scenario
from edgewave.tasks.drift.steps import check_one_site, policy_for
from edgewave.tasks.platform.fleetfile import DriftPolicy, load_fleet_file
from edgewave.tasks.platform.monitoring import (
    EVENTS,
    REPORTS,
    LedgerConflict,
    MonitoringStore,
    load_ledger,
    save_ledger,
)
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
from edgewave.tasks.sim.windows import ship_windows, upload_windows, write_windows

POLICY = policy_for(Settings(), load_fleet_file(Path(__file__).parents[2] / "deployments" / "fleet.yaml").drift)


@pytest.fixture
def world(settings: Settings, split, trained, exported):
    """A home whose bundle store holds a signed v1 with a 4,200-row training reference."""
    key = load_or_create_signing_key(settings.signing_key)
    t, e = trained["sklearn"], exported["sklearn"]
    manifest = build_manifest(
        name=settings.model_name, version=1, family="sklearn", model=e.model, int8_model=None,
        train_frame=split.train_frame, threshold=t.metrics.threshold, metrics=t.metrics.as_dict(),
        data_fingerprint=split.data_fingerprint, parity_max_abs_diff=e.parity_max_abs_diff, reference_rows=5000)
    folder = write_bundle(settings.home / "bundles" / settings.model_name / "v1", manifest, e.model, None, key)
    (settings.home / "monitoring").mkdir(parents=True)
    return settings, load_model(folder, load_trusted_keys(settings.trusted_keys))


def check(settings: Settings, site: str, policy: DriftPolicy = POLICY, check_id: str = "drift-test"):
    return check_one_site(settings, policy, check_id, site)


@pytest.mark.parametrize("seed", [101, 202, 303, 404, 505])
def test_undrifted_sites_from_other_seeds_raise_no_alarm(world, seed: int) -> None:
    settings, model = world
    ship_windows(settings.monitoring_store, "healthy", generate(1500, seed), model, window_rows=500)
    result = check(settings, "healthy")
    assert result.status == "checked" and result.rows_new == 1500
    assert not result.drifted, [(c.column, round(c.score, 3)) for c in result.columns if c.drifted]
    assert all("wasserstein" in c.method.lower() for c in result.columns)


@pytest.mark.parametrize("name, params, expected", [
    ("sensor_calibration_offset", {"offset": 5.0}, {"process_temperature_k"}),
    ("sensor_calibration_offset", {"feature": "torque_nm", "offset": 4.0}, {"torque_nm"}),
    # the hall gets warmer: both temperatures move by 5 K (process has the smaller spread, so it leads)
    ("ambient_temperature_shift", {}, {"process_temperature_k", "air_temperature_k"}),
    ("product_mix_change", {}, {"product_quality"}),
    ("worn_tool_regime", {}, {"tool_wear_min"}),
])
def test_each_drift_scenario_is_detected_with_its_top_feature(world, name: str, params: dict,
                                                               expected: set[str]) -> None:
    settings, model = world
    drifted = generate(1500, 77, scenario(name, **params))
    ship_windows(settings.monitoring_store, "drifting", drifted, model, window_rows=500)
    result = check(settings, "drifting")
    scores = [(c.column, round(c.score, 3)) for c in result.columns]
    assert result.drifted and set(result.top_features[:len(expected)]) == expected, scores
    assert result.drifted_share >= POLICY.drift_share
    store = MonitoringStore.of(settings)
    assert result.report == store.link(*REPORTS, "drift-test", "drifting.html")
    report = store.get(settings.home / "report.html", *REPORTS, "drift-test", "drifting.html")
    assert all(feature in report.read_text() for feature in expected)


def test_late_windows_of_an_offline_site_count_in_the_next_check_and_none_twice(world, tmp_path: Path) -> None:
    settings, model = world
    buffered = write_windows(tmp_path / "buffer", "plant-x", generate(600, 5), model, window_rows=300)  # offline
    ship_windows(settings.monitoring_store, "plant-x", generate(700, 6), model, window_rows=350)
    first = check(settings, "plant-x", check_id="drift-1")
    assert (first.status, first.rows_new, first.windows) == ("checked", 700, 2)

    upload_windows(settings.monitoring_store, "plant-x", buffered)  # back online: older windows arrive
    second = check(settings, "plant-x", check_id="drift-2")
    assert (second.status, second.rows_new, second.windows) == ("checked", 600, 2)

    third = check(settings, "plant-x", check_id="drift-3")
    assert third.status == "no-data" and third.rows_new == 0
    ledger = load_ledger(MonitoringStore.of(settings), "plant-x")
    assert sum(w.rows for w in ledger.history) == 1300 and len(ledger.seen) == 4


def test_too_few_rows_wait_for_the_next_check_instead_of_being_lost(world) -> None:
    settings, model = world
    ship_windows(settings.monitoring_store, "quiet", generate(300, 8), model, window_rows=300)
    waiting = check(settings, "quiet")
    assert waiting.status == "waiting" and waiting.rows_new == 300
    ship_windows(settings.monitoring_store, "quiet", generate(300, 9), model, window_rows=300)
    ready = check(settings, "quiet")
    assert ready.status == "checked" and ready.rows_new == 600


def test_a_corrupt_window_is_skipped_named_and_kept_while_the_rest_is_checked(world) -> None:
    settings, model = world
    ship_windows(settings.monitoring_store, "broken", generate(600, 3), model, window_rows=600)
    site_dir = settings.home / "monitoring" / "broken"
    good = next(site_dir.iterdir()).name
    bad = good.replace("-n600", "-n50").replace("-000001-", "-000009-")
    (site_dir / bad).write_bytes(b"not parquet")
    result = check(settings, "broken")
    assert (result.status, result.rows_new, result.windows) == ("checked", 600, 1)
    assert bad in result.detail and "unreadable" in result.detail
    assert (site_dir / bad).exists(), "a damaged window stays in the store for a person to look at"
    assert check(settings, "broken").status == "no-data", "neither window is counted again"


def test_consecutive_windows_confirm_a_site_only_on_the_same_model_version(world) -> None:
    settings, model = world
    worn = scenario("worn_tool_regime")
    results = []
    for i in range(2):
        ship_windows(settings.monitoring_store, "worn", generate(600, 30 + i, worn), model, window_rows=600)
        results.append(check(settings, "worn", check_id=f"drift-{i}"))
    assert [r.consecutive for r in results] == [1, 2]
    assert [r.confirmed for r in results] == [False, True]


def test_a_policy_threshold_for_an_unknown_column_is_refused_with_its_name(world) -> None:
    settings, model = world
    ship_windows(settings.monitoring_store, "s", generate(600, 3), model, window_rows=600)
    bad = POLICY.model_copy(update={"column_thresholds": {"spindle_vibration": 0.3}})
    result = check(settings, "s", policy=bad)
    assert result.status == "error" and "spindle_vibration" in result.detail


def test_drift_policy_errors_name_the_field(tmp_path: Path) -> None:
    data = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "fleet.yaml").read_text())
    data["drift"]["min_sites"] = 99
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="drift.min_sites: 99 but the fleet has 6 sites"):
        load_fleet_file(path)
    data["drift"]["min_sites"] = 1
    data["drift"]["drift_share"] = 1.5
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="drift.drift_share"):
        load_fleet_file(path)


def test_a_window_read_while_it_is_being_uploaded_is_neither_lost_nor_counted_twice(world, tmp_path: Path) -> None:
    settings, model = world
    store = MonitoringStore.of(settings)
    ship_windows(settings.monitoring_store, "uploading", generate(600, 12), model, window_rows=600)
    (arriving,) = write_windows(tmp_path / "buffer", "uploading", generate(600, 13), model, window_rows=600)
    fs, root = open_store(settings.monitoring_store)
    final = f"{root}/uploading/{arriving.name}"
    partial = f"{root}/uploading/.{arriving.name}.1234abcd.partial"
    data = arriving.read_bytes()
    fs.pipe_file(partial, data[: len(data) // 2])  # the upload is half way
    first = check(settings, "uploading", check_id="drift-1")
    assert (first.status, first.rows_new, first.windows) == ("checked", 600, 1), "the window in flight is not read"
    assert first.detail == "", "and not reported as a broken window either"
    fs.pipe_file(partial, data)  # the upload completes, then the name appears
    fs.mv(partial, final)
    second = check(settings, "uploading", check_id="drift-2")
    assert (second.status, second.rows_new, second.windows) == ("checked", 600, 1), "it counts in the next check"
    assert check(settings, "uploading", check_id="drift-3").status == "no-data", "and never again"
    assert arriving.name in load_ledger(store, "uploading").seen


def test_a_ledger_saved_by_another_check_meanwhile_is_not_overwritten(world) -> None:
    settings, model = world
    store = MonitoringStore.of(settings)
    ship_windows(settings.monitoring_store, "busy", generate(600, 14), model, window_rows=600)
    stale = load_ledger(store, "busy")
    assert check(settings, "busy", check_id="drift-1").status == "checked"
    with pytest.raises(LedgerConflict, match="another drift check"):
        save_ledger(store, "busy", stale)
    assert load_ledger(store, "busy").generation == 1


def test_the_drift_flow_fans_out_to_dask_workers_with_homes_of_their_own(world, tmp_path: Path) -> None:
    """EDGEWAVE_DASK_ADDRESS moves the per-site tasks to Dask workers. Each worker has its own
    EDGEWAVE_HOME, as a worker on another machine would: it counts every window once and the
    flow links every report, because ledgers and reports live in the monitoring store."""
    from distributed import LocalCluster

    from edgewave.flows.drift import drift_monitor
    from edgewave.tasks.platform.settings import use

    settings, model = world
    fleet_path = tmp_path / "fleet.yaml"
    data = yaml.safe_load((Path(__file__).parents[2] / "deployments" / "fleet.yaml").read_text())
    data["fleet"] = {"sites": [{"id": "calm", "port": 18901}, {"id": "worn", "port": 18902}]}
    data["rollout"]["waves"] = [{"name": "all", "percent": 100}]
    data["drift"].update({"consecutive_windows": 1, "min_sites": 1})
    fleet_path.write_text(yaml.safe_dump(data))
    ship_windows(settings.monitoring_store, "calm", generate(800, 11), model, window_rows=400)
    ship_windows(settings.monitoring_store, "worn", generate(800, 12, scenario("worn_tool_regime")), model,
                 window_rows=400)
    worker_home = tmp_path / "worker-home"
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True, host="127.0.0.1", dashboard_address=None,
                      env={"EDGEWAVE_HOME": str(worker_home)}) as cluster:
        dask_settings = settings.model_copy(update={"dask_address": cluster.scheduler_address, "fleet_path": fleet_path})
        with use(dask_settings):
            first = drift_monitor()
            again = drift_monitor()
        ran_on_dask = cluster.scheduler.transition_counter
    assert ran_on_dask > 0, "the per-site tasks went through the Dask scheduler"
    assert first.sites_drifted == ["worn"] and first.detected
    assert {c.site: (c.status, c.rows_new) for c in first.sites} == {"calm": ("checked", 800), "worn": ("checked", 800)}
    assert {c.site: c.status for c in again.sites} == {"calm": "no-data", "worn": "no-data"}, "every window once"
    store = MonitoringStore.of(settings)
    reports = {c.site: c.report for c in first.sites}
    for site in ("calm", "worn"):
        assert reports[site] == store.link(*REPORTS, first.check_id, f"{site}.html")
        assert store.read_json(*REPORTS, first.check_id, "summary.json")["check_id"] == first.check_id
    assert list((worker_home / "cache" / "bundles").rglob("bundle.json")), "the worker cached in its own home"
    assert not (settings.home / "cache").exists(), "the worker wrote nothing into the flow's home"
    assert store.read_json(*EVENTS)[settings.model_name]["check_id"] == first.check_id, "the drift event was emitted"
