from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewave.tasks.release.data import FEATURES, TARGET, DataValidationError, generate, load_user_data


def user_frame(rows: int = 200) -> pd.DataFrame:
    """What a plant exports: quality as a letter, one row per process."""
    frame = generate(rows, 2)[list(FEATURES) + [TARGET]].copy()
    frame["product_quality"] = frame["product_quality"].map({0.0: "L", 1.0: "M", 2.0: "H"})
    return frame


def test_good_csv_and_parquet_load_with_quality_encoded(tmp_path: Path) -> None:
    frame = user_frame()
    frame.to_csv(tmp_path / "good.csv", index=False)
    frame.to_parquet(tmp_path / "good.parquet", index=False)
    for name in ("good.csv", "good.parquet"):
        loaded = load_user_data(tmp_path / name)
        assert list(loaded.columns) == list(FEATURES) + [TARGET]
        assert len(loaded) == 200
        assert set(loaded["product_quality"].unique()) <= {0.0, 1.0, 2.0}
        np.testing.assert_allclose(loaded["torque_nm"], frame["torque_nm"])


def test_missing_column_is_named(tmp_path: Path) -> None:
    user_frame().drop(columns=["torque_nm"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['torque_nm'\]"):
        load_user_data(tmp_path / "bad.csv")


def test_wrong_dtype_names_the_column_and_counts_the_bad_rows(tmp_path: Path) -> None:
    frame = user_frame().astype({"rotational_speed_rpm": object})
    frame.loc[[3, 7, 9], "rotational_speed_rpm"] = "fast"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=r"column 'rotational_speed_rpm' should be float but 3 rows are not numbers"):
        load_user_data(tmp_path / "bad.csv")


def test_nan_heavy_column_names_the_column_and_counts_the_missing_rows(tmp_path: Path) -> None:
    frame = user_frame()
    frame.loc[:59, "tool_wear_min"] = np.nan
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"column 'tool_wear_min' is missing or NaN in 60 of 200 rows"):
        load_user_data(tmp_path / "bad.parquet")


def test_a_few_missing_values_are_dropped_not_refused(tmp_path: Path) -> None:
    frame = user_frame()
    frame.loc[[1, 2], "air_temperature_k"] = np.nan
    frame.to_csv(tmp_path / "ok.csv", index=False)
    assert len(load_user_data(tmp_path / "ok.csv")) == 198


def test_unknown_category_and_non_binary_target_are_refused(tmp_path: Path) -> None:
    frame = user_frame()
    frame.loc[0, "product_quality"] = "XL"
    frame.to_csv(tmp_path / "cat.csv", index=False)
    with pytest.raises(DataValidationError, match=r"column 'product_quality' has 1 rows outside the categories"):
        load_user_data(tmp_path / "cat.csv")
    frame = user_frame()
    frame.loc[0, TARGET] = 2
    frame.to_csv(tmp_path / "target.csv", index=False)
    with pytest.raises(DataValidationError, match=r"'machine_failure' must be 0 or 1 but 1 rows hold \[2\]"):
        load_user_data(tmp_path / "target.csv")


def test_missing_file_and_unknown_format_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no such file"):
        load_user_data(tmp_path / "absent.csv")
    (tmp_path / "data.xlsx").write_bytes(b"x")
    with pytest.raises(DataValidationError, match="unsupported file type '.xlsx'"):
        load_user_data(tmp_path / "data.xlsx")
