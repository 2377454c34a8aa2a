"""The simulated machines a spec can name: each makes its spec's columns, its failures follow its
physics, its drift scenarios move what they say; traffic refuses what its source cannot do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from edgewave.tasks.data.machines import MACHINES, machine_of, simulate
from edgewave.tasks.data.spec import SpecError, load_spec
from edgewave.tasks.platform.fleetfile import Site
from edgewave.tasks.platform.monitoring import MonitoringStore
from edgewave.tasks.sim.traffic import ReferenceRows, Simulated, Traffic

ROOT = Path(__file__).resolve().parents[2]
SPECS = {"ai4i": ROOT / "deployments" / "dataset.yaml", "pump": ROOT / "deployments" / "pump-dataset.yaml"}
N = 20_000


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_each_machine_makes_exactly_its_specs_columns_within_their_ranges(machine: str) -> None:
    spec = load_spec(SPECS[machine])
    assert spec.generator == machine
    frame = simulate(spec, 5000, 3)
    for column in spec.columns:
        values = frame[column.name]
        if column.range is not None:
            assert values.between(*column.range).all(), f"{column.name} leaves its physical range"
        if column.kind == "category":
            assert set(values.unique()) <= set(range(len(column.categories)))
    assert set(frame[spec.target.name].unique()) == {0, 1}


@pytest.mark.parametrize("machine", sorted(MACHINES))
def test_each_machines_demo_scenarios_build_and_change_its_data(machine: str) -> None:
    spec, m = load_spec(SPECS[machine]), MACHINES[machine]
    base = simulate(spec, N, 5)
    assert len(m.demo_drift) == 2
    for name, params in m.demo_drift:
        drifted = simulate(spec, N, 5, m.scenario(name, **params))
        moved = [c for c in spec.features if abs(drifted[c].mean() - base[c].mean()) > 0.2 * base[c].std()]
        assert moved, f"{machine}: scenario {name} moves no column by a fifth of its spread"


def test_pump_failures_follow_the_physics() -> None:
    frame = MACHINES["pump"].generate(N, 7)
    rate = frame["pump_failure"].mean()
    assert 0.01 < rate < 0.2, rate
    rough_and_hot = (frame.vibration_mm_s > 5) & (frame.bearing_temperature_c > 66)
    assert frame[rough_and_hot]["bearing"].mean() > 10 * frame[~rough_and_hot]["bearing"].mean()
    assert not frame[(frame.flow_m3h < 150)]["cavitation"].any(), "no cavitation near the best efficiency point"
    efficiency_lost = frame.motor_current_a / (frame.flow_m3h * frame.discharge_pressure_bar / 36 + 0.1)
    lossy = efficiency_lost > efficiency_lost.quantile(0.95)
    assert frame[lossy]["overload"].mean() > 10 * frame[~lossy]["overload"].mean()


def test_pump_bearing_wear_raises_vibration_and_failures_but_a_sensor_offset_does_not_change_failures() -> None:
    pump = MACHINES["pump"]
    base = pump.generate(N, 9)
    worn = pump.generate(N, 9, pump.scenario("bearing_wear", rate=2.0))
    assert worn.vibration_mm_s.mean() > base.vibration_mm_s.mean() + 0.5
    assert worn["pump_failure"].mean() > 1.5 * base["pump_failure"].mean()
    offset = pump.generate(N, 9, pump.scenario("sensor_calibration_offset", offset=8.0))
    assert (offset.bearing_temperature_c - base.bearing_temperature_c).round(6).eq(8.0).all()
    assert (offset["pump_failure"] == base["pump_failure"]).all()


def test_unknown_machines_scenarios_and_mismatched_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pump: unknown drift scenario 'worn_tool_regime'; known: "):
        MACHINES["pump"].scenario("worn_tool_regime")
    with pytest.raises(ValueError, match="pump: drift scenario 'bearing_wear': .*unexpected keyword"):
        MACHINES["pump"].scenario("bearing_wear", life_factor=2)

    data = yaml.safe_load(SPECS["ai4i"].read_text())
    (tmp_path / "lathe.yaml").write_text(yaml.safe_dump({**data, "generator": "lathe"}))
    with pytest.raises(SpecError, match=r"generator: .*no simulated machine 'lathe'; known: \['ai4i', 'pump'\]"):
        load_spec(tmp_path / "lathe.yaml")
    (tmp_path / "mixed.yaml").write_text(yaml.safe_dump({**data, "generator": "pump"}))
    with pytest.raises(ValueError, match=r"declares \['air_temperature_k'.*which the 'pump' machine does not make"):
        simulate(load_spec(tmp_path / "mixed.yaml"), 10, 0)
    (tmp_path / "own.yaml").write_text(yaml.safe_dump({k: v for k, v in data.items() if k != "generator"}))
    with pytest.raises(ValueError, match="names no simulated machine .*EDGEWAVE_DATA_PATH"):
        machine_of(load_spec(tmp_path / "own.yaml"))


def test_reference_rows_cannot_drift_or_give_feedback_and_say_so(tmp_path: Path) -> None:
    spec = load_spec(SPECS["pump"])
    reference = ReferenceRows(simulate(spec, 50, 1)[list(spec.features)], spec.features)
    sites = [Site(id="s1", port=9999)]
    with pytest.raises(ValueError, match="feedback needs the true outcome"):
        Traffic(sites, reference, feedback_store=MonitoringStore(str(tmp_path)))
    traffic = Traffic(sites, reference)
    with pytest.raises(ValueError, match="'bearing_wear': ReferenceRows rows cannot drift"):
        traffic.set_scenario("s1", MACHINES["pump"].scenario("bearing_wear"))
    assert Traffic(sites, Simulated(spec)).set_scenario("s1", MACHINES["pump"].scenario("bearing_wear")) is None


def test_feedback_reports_the_rows_that_were_sent_with_their_outcome() -> None:
    from edgewave.tasks.sim.traffic import RowStream

    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [4.0, 5.0, 6.0], "y": [0, 1, 0]}, index=[10, 20, 30])
    stream = RowStream(frame, ("a", "b"), "y")
    body, content_type = stream.body(np.array([2, 0]))
    assert content_type == "application/json"
    assert json.loads(body) == {"instances": [{"a": 3.0, "b": 6.0}, {"a": 1.0, "b": 4.0}]}
    assert stream.outcomes([2, 0]).to_dict("list") == {"a": [3.0, 1.0], "b": [6.0, 4.0], "y": [0, 0]}


def test_traffic_sends_every_row_of_a_stream_once_before_any_again() -> None:
    from edgewave.tasks.sim.traffic import Picks

    picks = Picks(10, np.random.default_rng(0))
    first = np.concatenate([picks.take(3) for _ in range(3)] + [picks.take(1)])
    assert sorted(first.tolist()) == list(range(10)), "the whole stream, each row once"
    assert first.tolist() != list(range(10)), "in a shuffled order"
    across = picks.take(25)  # more than the stream: whole rounds, each a fresh order
    assert len(across) == 25 and sorted(across[:10].tolist()) == sorted(across[10:20].tolist()) == list(range(10))
