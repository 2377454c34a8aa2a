from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from edgewave.tasks.data.ai4i import FAILURE_MODES, FEATURES, TARGET, fingerprint, generate, scenario

N = 20_000


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate(N, seed=7)


def test_same_seed_gives_identical_data_and_other_seed_does_not() -> None:
    pd.testing.assert_frame_equal(generate(2000, 3), generate(2000, 3))
    assert not generate(2000, 3)[list(FEATURES)].equals(generate(2000, 4)[list(FEATURES)])


def test_product_quality_mix_is_50_30_20(frame: pd.DataFrame) -> None:
    shares = frame["product_quality"].value_counts(normalize=True).sort_index().to_numpy()
    np.testing.assert_allclose(shares, [0.5, 0.3, 0.2], atol=0.015)


def test_temperatures_follow_the_published_construction(frame: pd.DataFrame) -> None:
    assert frame["air_temperature_k"].mean() == pytest.approx(300, abs=0.05)
    assert frame["air_temperature_k"].std() == pytest.approx(2, abs=0.05)
    gap = frame["process_temperature_k"] - frame["air_temperature_k"]
    assert gap.mean() == pytest.approx(10, abs=0.05)
    # air is a random walk: neighbouring rows are strongly correlated
    assert frame["air_temperature_k"].autocorr() > 0.9


def test_torque_is_non_negative_and_speed_falls_with_torque(frame: pd.DataFrame) -> None:
    assert frame["torque_nm"].min() >= 0
    assert frame["torque_nm"].mean() == pytest.approx(40, abs=0.3)
    assert frame["torque_nm"].std() == pytest.approx(10, abs=0.3)
    assert frame[["rotational_speed_rpm", "torque_nm"]].corr().iloc[0, 1] < -0.8


def test_tool_wear_grows_by_quality_and_resets_after_tool_life(frame: pd.DataFrame) -> None:
    wear = frame["tool_wear_min"].to_numpy()
    steps = np.diff(wear)
    quality = frame["product_quality"].to_numpy()[1:].astype(int)
    growing = steps > 0
    np.testing.assert_array_equal(steps[growing], np.array([2, 3, 5])[quality[growing]])
    assert (steps < 0).sum() > 10  # tools are replaced
    assert wear.max() <= 240 + 5


def test_failure_modes_obey_their_rules(frame: pd.DataFrame) -> None:
    power = frame["torque_nm"] * frame["rotational_speed_rpm"] * 2 * np.pi / 60
    gap = frame["process_temperature_k"] - frame["air_temperature_k"]
    pd.testing.assert_series_equal(frame["hdf"], (gap < 8.6) & (frame["rotational_speed_rpm"] < 1380), check_names=False)
    pd.testing.assert_series_equal(frame["pwf"], (power < 3500) | (power > 9000), check_names=False)
    limits = frame["product_quality"].map({0: 11_000, 1: 12_000, 2: 13_000})
    pd.testing.assert_series_equal(frame["osf"], frame["tool_wear_min"] * frame["torque_nm"] > limits, check_names=False)
    assert (frame[TARGET] == frame[list(FAILURE_MODES)].any(axis=1)).all()
    assert 0.02 < frame[TARGET].mean() < 0.07  # published data: 3.4 %
    assert 0.0003 < frame["rnf"].mean() < 0.003


def test_calibration_offset_moves_the_reading_but_not_the_machine() -> None:
    base = generate(5000, 11)
    drifted = generate(5000, 11, scenario("sensor_calibration_offset", feature="torque_nm", offset=4.0))
    np.testing.assert_allclose(drifted["torque_nm"] - base["torque_nm"], 4.0)
    pd.testing.assert_series_equal(drifted[TARGET], base[TARGET])


def test_ambient_shift_moves_both_temperatures() -> None:
    drifted = generate(5000, 11, scenario("ambient_temperature_shift", delta_k=6.0))
    base = generate(5000, 11)
    assert drifted["air_temperature_k"].mean() - base["air_temperature_k"].mean() == pytest.approx(6.0, abs=0.01)
    assert drifted["process_temperature_k"].mean() - base["process_temperature_k"].mean() == pytest.approx(6.0, abs=0.01)


def test_product_mix_change_and_worn_tools_change_the_process() -> None:
    mix = generate(N, 5, scenario("product_mix_change", low=0.1, medium=0.2, high=0.7))
    assert (mix["product_quality"] == 2).mean() == pytest.approx(0.7, abs=0.02)
    base = generate(N, 5)
    worn = generate(N, 5, scenario("worn_tool_regime", life_factor=1.5))
    assert worn["tool_wear_min"].max() > 300
    assert worn["osf"].mean() > 3 * base["osf"].mean()


def test_unknown_scenario_and_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown drift scenario 'heatwave'"):
        scenario("heatwave")
    with pytest.raises(ValueError, match="unknown feature 'pressure'"):
        scenario("sensor_calibration_offset", feature="pressure")


def test_fingerprint_is_stable_and_sees_one_changed_value() -> None:
    frame = generate(1000, 1)
    assert fingerprint(frame) == fingerprint(frame.copy())
    changed = frame.copy()
    changed.loc[500, "torque_nm"] += 0.1
    assert fingerprint(changed) != fingerprint(frame)
