from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from edgewave.tasks.platform.fleetfile import PolicyError, load_fleet_file, plan_waves, wave_size
from tests.helpers import write_fleet_file

EXAMPLE = Path(__file__).resolve().parents[2] / "deployments" / "fleet.yaml"


def fleet_file(tmp_path: Path, n_sites: int = 11, **rollout) -> Path:
    """Sites s0…s{n-1} on plants a (the first four) and b, a canary then the rest unless `waves` says otherwise."""
    return write_fleet_file(tmp_path / "fleet.yaml", [{"id": f"s{i}", "port": 19000 + i,
                                                       "labels": {"plant": "a" if i < 4 else "b"}} for i in range(n_sites)],
                            **rollout)


def test_the_example_fleet_loads_and_plans_canary_half_rest() -> None:
    loaded = load_fleet_file(EXAMPLE)
    plan = plan_waves(loaded.fleet, loaded.rollout)
    assert [name for name, _ in plan] == ["canary", "half", "rest"]
    assert [len(sites) for _, sites in plan] == [1, 3, 2]
    assert sorted(s for _, sites in plan for s in sites) == sorted(s.id for s in loaded.fleet.sites)


@pytest.mark.parametrize(("rounding", "expected"), [("up", 1), ("nearest", 1), ("down", 0)])
def test_five_percent_of_eleven_follows_the_rounding_rule(rounding: str, expected: int) -> None:
    assert wave_size(5, 11, rounding) == expected
    assert wave_size(50, 10, rounding) == 5


def test_a_wave_of_zero_sites_is_a_load_error_naming_the_wave(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, rounding="down",
                      waves=[{"name": "canary", "percent": 5}, {"name": "rest", "percent": 100}])
    with pytest.raises(PolicyError, match=r"rollout.waves.0 \(canary\): selects 0 sites \(5 % of 11 rounded down"):
        load_fleet_file(path)


def test_an_unknown_selector_label_is_a_load_error(tmp_path: Path) -> None:
    path = fleet_file(tmp_path, waves=[{"name": "canary", "selector": {"plnt": "a"}}, {"name": "rest", "percent": 100}])
    with pytest.raises(PolicyError, match=r"rollout.waves.0 \(canary\).selector: no site has the label\(s\) \['plnt'\]"):
        load_fleet_file(path)


def test_a_selector_picks_by_labels_from_the_remaining_sites(tmp_path: Path) -> None:
    loaded = load_fleet_file(fleet_file(tmp_path, waves=[{"name": "canary", "count": 1},
                                                         {"name": "plant-a", "selector": {"plant": "a"}},
                                                         {"name": "rest", "percent": 100}]))
    plan = dict(plan_waves(loaded.fleet, loaded.rollout))
    assert plan["canary"] == ["s0"] and plan["plant-a"] == ["s1", "s2", "s3"] and len(plan["rest"]) == 7


@pytest.mark.parametrize(("rollout", "field"), [
    ({"analysis": {"max_error_rate": -0.1}}, "rollout.analysis.max_error_rate"),
    ({"analysis": {"max_p99_latency_ratio": -1}}, "rollout.analysis.max_p99_latency_ratio"),
    ({"concurrency": 0}, "rollout.concurrency"),
    ({"offline": {"then": "ignore"}}, "rollout.offline.then"),
    ({"waves": [{"name": "w", "count": 1, "percent": 10}]}, "rollout.waves.0"),
    ({"bake_seconds": "soon"}, "rollout.bake_seconds"),
    ({"colour": "blue"}, "rollout.colour"),
])
def test_bad_policy_values_fail_at_load_naming_the_field(tmp_path: Path, rollout: dict, field: str) -> None:
    with pytest.raises(PolicyError) as refused:
        load_fleet_file(fleet_file(tmp_path, **rollout))
    assert field in str(refused.value)


def test_uncovered_sites_duplicate_ids_and_bad_zones_are_refused(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="sites not covered by any wave"):
        load_fleet_file(fleet_file(tmp_path, waves=[{"name": "canary", "count": 1}]))
    data = yaml.safe_load(fleet_file(tmp_path).read_text())
    data["fleet"]["sites"][1]["id"] = "s0"
    data["fleet"]["sites"][2]["timezone"] = "Mars/Olympus"
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(PolicyError) as refused:
        load_fleet_file(tmp_path / "bad.yaml")
    assert "fleet.sites.2.timezone: unknown time zone 'Mars/Olympus'" in str(refused.value)


def test_maintenance_windows_are_in_the_site_time_zone_and_may_cross_midnight(tmp_path: Path) -> None:
    data = yaml.safe_load(fleet_file(tmp_path).read_text())
    data["fleet"]["sites"][0].update(timezone="Europe/Berlin",
                                     maintenance_windows=[{"days": ["sat"], "start": "22:00", "end": "04:00"}])
    (tmp_path / "mw.yaml").write_text(yaml.safe_dump(data))
    site = load_fleet_file(tmp_path / "mw.yaml").fleet.sites[0]
    saturday_late = datetime(2026, 11, 28, 22, 30, tzinfo=UTC)  # 23:30 in Berlin, Saturday
    sunday_early = datetime(2026, 11, 29, 2, 0, tzinfo=UTC)     # 03:00 Sunday, still Saturday's window
    sunday_day = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    assert site.in_maintenance(saturday_late) and site.in_maintenance(sunday_early)
    assert not site.in_maintenance(sunday_day)
    assert load_fleet_file(tmp_path / "mw.yaml").fleet.sites[1].in_maintenance(sunday_day)  # no windows: always


def test_an_unreadable_or_non_yaml_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_fleet_file(tmp_path / "absent.yaml")
    (tmp_path / "x.yaml").write_text("fleet: [")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_fleet_file(tmp_path / "x.yaml")


def test_unreachable_sites_are_requeued_or_counted_failed_after_the_deadline(tmp_path: Path) -> None:
    """The controller's offline policy, with a telemetry reader where two sites never answer."""
    from edgewave.tasks.rollout.controller import Controller, Io
    from edgewave.tasks.rollout.gitops import DesiredStateRepo
    from edgewave.tasks.rollout.telemetry import Reading

    def controller(then: str) -> tuple[Controller, list[str]]:
        path = fleet_file(tmp_path, n_sites=6, waves=[{"name": "canary", "count": 3}, {"name": "rest", "percent": 100}],
                          offline={"deadline_seconds": 0.2, "then": then})
        log: list[str] = []
        io = Io(repo=DesiredStateRepo(str(tmp_path / f"remote-{then}.git"), tmp_path / f"clone-{then}").ensure(),
                read=lambda sites: {s.id: None if s.id in ("s1", "s4") else Reading(version=1) for s in sites},
                sleep=lambda seconds: None, log=log.append)
        return Controller(load_fleet_file(path), "m", 2, "file:///b", "e" * 64, 1, io), log

    skip, log = controller("skip")
    planned = skip.start()
    record = skip.defer_unreachable(planned, 0)
    assert record.waves[0].sites == ["s0", "s2"] and record.waves[0].deferred == ["s1"]
    assert record.waves[1].sites[0] == "s1", "re-queued to the next wave"
    assert planned.waves[0].sites == ["s0", "s1", "s2"], "the record handed in is not changed"
    record = skip.defer_unreachable(record, 1)
    assert "s4" in record.waves[1].deferred and "s1" in record.waves[1].deferred, "skipped in the last wave"
    assert any("re-queued" in line for line in log)

    fail, _ = controller("fail")
    record = fail.defer_unreachable(fail.start(), 0)
    assert record.waves[0].failed == ["s1"] and record.waves[0].sites == ["s0", "s2"]
