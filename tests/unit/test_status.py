"""What `edgewave status` reads: the last drift check with its cooldown, and the rollout in progress."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from edgewave.tasks.drift.checks import ColumnDrift, SiteCheck, summarise
from edgewave.tasks.fleet.status import checked_at, describe_rollout, drift_status, rollout_in_progress
from edgewave.tasks.platform.fleetfile import DriftPolicy
from edgewave.tasks.platform.monitoring import EVENTS, REPORTS, MonitoringStore
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.lease import Owner, new_lease
from edgewave.tasks.rollout.lease import path as lease_path
from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def _check(site: str, drifted: bool, confirmed: bool) -> SiteCheck:
    columns = [ColumnDrift(column="torque_nm", method="wasserstein", score=0.9 if drifted else 0.1, threshold=0.5,
                           drifted=drifted),
               ColumnDrift(column="tool_wear_min", method="wasserstein", score=2.0 if drifted else 0.1, threshold=0.5,
                           drifted=drifted)]
    return SiteCheck(site=site, check_id="drift-20261127T115500123", status="checked", drifted=drifted,
                     drifted_share=1.0 if drifted else 0.0, columns=columns, consecutive=2 if drifted else 0,
                     confirmed=confirmed)


def test_drift_status_names_each_sites_verdict_the_confirmed_sites_and_the_cooldown(tmp_path: Path) -> None:
    store = MonitoringStore(f"file://{tmp_path}")
    summary = summarise("drift-20261127T115500123", "m", [_check("a", True, True), _check("b", False, False)],
                        DriftPolicy(min_sites=1))
    store.write_json(summary.model_dump(), *REPORTS, summary.check_id, "summary.json")
    store.write_json({"m": {"at": NOW.timestamp() - 600, "check_id": summary.check_id}}, *EVENTS)

    status = drift_status(store, "m", cooldown_minutes=60, now=NOW.timestamp())
    last = status["last_check"]
    assert last["at"] == "2026-11-27T11:55:00+00:00" and last["detected"] and last["confirmed"] == ["a"]
    assert [(s["site"], s["drifted"], s["top_feature"]) for s in last["sites"]] == [
        ("a", True, "tool_wear_min"), ("b", False, None)], "the most severe column is the top feature"
    assert status["cooldown_until"] == "2026-11-27T12:50:00+00:00"
    assert drift_status(store, "m", cooldown_minutes=5, now=NOW.timestamp())["cooldown_until"] is None, "over"
    assert drift_status(store, "other", 60)["last_check"] is None, "another model's check is not this one's"


def test_the_rollout_in_progress_shows_its_wave_sites_converged_measurements_and_lease(tmp_path: Path) -> None:
    repo = DesiredStateRepo.of(Settings(home=tmp_path)).ensure()
    assert rollout_in_progress(repo, "m") is None, "no lease: nothing in progress"
    waves = [WaveRecord(index=0, name="canary", sites=["a"], status="advanced", converged=["a"]),
             WaveRecord(index=1, name="half", sites=["b", "c"], status="committed", converged=["b"],
                        measurements=[{"at": 1}]),
             WaveRecord(index=2, name="rest", sites=["d"])]
    record = RolloutRecord(id="ro-m-v3-x", model="m", version=3, from_version=2, waves=waves,
                           policy={"analysis": {"measurements": 3}}, started_at=NOW)
    lease = new_lease("ro-m-v3-x", 3, "rollout", NOW, 600, Owner("controller-7", 42))
    repo.commit([], "ro-m-v3-x: wave 2", record=("ro-m-v3-x", record.model_dump(mode="json")),
                extra={lease_path("m"): lease.model_dump_json()})

    progress = rollout_in_progress(repo, "m")
    assert progress["wave"] == {"number": 2, "of": 3, "name": "half", "status": "committed", "sites": ["b", "c"],
                                "converged": ["b"], "measurements": 1, "measurements_planned": 3}
    assert progress["holder"] == "controller-7:42" and progress["since"] == "2026-11-27T12:00:00+00:00"
    assert describe_rollout(progress) == (
        "rollout ro-m-v3-x of v3 (running): wave 2 of 3 (half, committed), 1 of 2 sites converged, "
        "1 of 3 measurements; lease held by controller-7:42 since 2026-11-27T12:00:00+00:00")


def test_a_check_id_that_is_not_a_time_has_no_time() -> None:
    assert checked_at("drift-20261127T115500123") == "2026-11-27T11:55:00+00:00"
    assert checked_at("drift-test") is None
