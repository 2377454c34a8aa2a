"""A plant's own file, read through the shipped AI4I dataset spec: the published file's layout
loads as it is, and every kind of bad export is refused naming the column and the rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from edgewave.tasks.data.ai4i import FEATURES, TARGET, generate
from edgewave.tasks.data.spec import load_spec
from edgewave.tasks.data.userdata import DataValidationError, load_user_data

SPEC = load_spec(Path(__file__).resolve().parents[2] / "deployments" / "dataset.yaml")
PUBLISHED = ["UDI", "Product ID", "Type", "Air temperature [K]", "Process temperature [K]", "Rotational speed [rpm]",
             "Torque [Nm]", "Tool wear [min]", "Machine failure", "TWF", "HDF", "PWF", "OSF", "RNF"]


def published(rows: int = 200) -> pd.DataFrame:
    """Rows laid out exactly as ai4i2020.csv is published (its headers, its extra columns)."""
    frame = generate(rows, 2)
    quality = frame["product_quality"].map({0.0: "L", 1.0: "M", 2.0: "H"})
    return pd.DataFrame({
        "UDI": range(1, rows + 1), "Product ID": [f"{q}{47180 + i}" for i, q in enumerate(quality)], "Type": quality,
        "Air temperature [K]": frame["air_temperature_k"], "Process temperature [K]": frame["process_temperature_k"],
        "Rotational speed [rpm]": frame["rotational_speed_rpm"].astype(int), "Torque [Nm]": frame["torque_nm"],
        "Tool wear [min]": frame["tool_wear_min"].astype(int), "Machine failure": frame[TARGET],
        **{mode.upper(): frame[mode].astype(int) for mode in ("twf", "hdf", "pwf", "osf", "rnf")},
    })[PUBLISHED]


def test_a_file_with_the_published_ai4i_headers_loads_through_the_shipped_spec(tmp_path: Path) -> None:
    frame = published()
    frame.to_csv(tmp_path / "ai4i2020.csv", index=False)
    frame.to_parquet(tmp_path / "ai4i2020.parquet", index=False)
    for name in ("ai4i2020.csv", "ai4i2020.parquet"):
        loaded = load_user_data(tmp_path / name, SPEC)
        assert list(loaded.columns) == [*FEATURES, TARGET], "the spec's names, the extra columns left out"
        assert len(loaded) == 200
        assert set(loaded["product_quality"].unique()) <= {0.0, 1.0, 2.0}
        assert loaded[TARGET].dtype == np.int64 and loaded[TARGET].sum() == frame["Machine failure"].sum()
        np.testing.assert_allclose(loaded["torque_nm"], frame["Torque [Nm]"])


def test_a_missing_column_is_named_by_its_header(tmp_path: Path) -> None:
    published().drop(columns=["Torque [Nm]"]).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=r"missing column\(s\) \['Torque \[Nm\]'\]"):
        load_user_data(tmp_path / "bad.csv", SPEC)


def test_a_wrong_type_names_the_column_and_counts_the_bad_rows(tmp_path: Path) -> None:
    frame = published().astype({"Rotational speed [rpm]": object})
    frame.loc[[3, 7, 9], "Rotational speed [rpm]"] = "fast"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=r"'Rotational speed \[rpm\]' should be float but 3 rows are not"):
        load_user_data(tmp_path / "bad.csv", SPEC)


def test_a_mostly_empty_column_names_the_column_and_counts_the_rows(tmp_path: Path) -> None:
    frame = published()
    frame.loc[:59, "Tool wear [min]"] = np.nan
    frame.to_parquet(tmp_path / "bad.parquet", index=False)
    with pytest.raises(DataValidationError, match=r"'Tool wear \[min\]' is missing, NaN or implausible in 60 of 200"):
        load_user_data(tmp_path / "bad.parquet", SPEC)


def test_implausible_readings_beyond_the_allowance_are_refused_and_a_few_dropped(tmp_path: Path) -> None:
    frame = published()
    frame["Air temperature [K]"] = frame["Air temperature [K]"].astype(float)
    frame.loc[[1, 2], "Air temperature [K]"] = 2990.5  # a decimal point lost twice: within the 5 % allowance
    frame.to_csv(tmp_path / "few.csv", index=False)
    assert len(load_user_data(tmp_path / "few.csv", SPEC)) == 198, "the two implausible rows are dropped"
    frame.loc[:40, "Air temperature [K]"] = -1.0
    frame.to_csv(tmp_path / "many.csv", index=False)
    with pytest.raises(DataValidationError, match=r"'Air temperature \[K\]' has 41 rows outside its physical range "
                                                  r"\[250, 350\] K"):
        load_user_data(tmp_path / "many.csv", SPEC)


@pytest.mark.parametrize(("header", "values", "message"), [
    ("Type", ["X", "L"], r"'Type' has 1 rows outside the categories \['L', 'M', 'H'\]"),
    ("Machine failure", [2, 0], r"'Machine failure' must be '0' or '1' but 1 rows hold \['2'\]"),
    ("Tool wear [min]", [1.5, 2], r"'Tool wear \[min\]' should be int but 1 rows have fractions"),
])
def test_values_the_spec_does_not_allow_are_refused_by_column(tmp_path: Path, header: str, values: list,
                                                               message: str) -> None:
    frame = published().astype({header: object})
    frame.loc[[0, 1], header] = values
    frame.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match=message):
        load_user_data(tmp_path / "bad.csv", SPEC)


def test_an_unreadable_or_unknown_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="no such file"):
        load_user_data(tmp_path / "absent.csv", SPEC)
    (tmp_path / "data.xlsx").write_text("x")
    with pytest.raises(DataValidationError, match="unsupported file type '.xlsx'"):
        load_user_data(tmp_path / "data.xlsx", SPEC)


def test_edgewave_data_check_shows_the_published_file_as_the_spec_reads_it_and_refuses_a_bad_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from edgewave.flows.cli import app

    monkeypatch.setenv("EDGEWAVE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("COLUMNS", "200")
    frame = published()
    frame.to_csv(tmp_path / "ai4i2020.csv", index=False)
    shown = CliRunner().invoke(app, ["data", "check", str(tmp_path / "ai4i2020.csv")])
    assert shown.exit_code == 0, shown.output
    assert "Torque [Nm]" in shown.output and "torque_nm" in shown.output
    assert f"200 rows kept; target 'Machine failure': {frame['Machine failure'].sum()} failure" in shown.output

    frame.drop(columns=["Torque [Nm]"]).to_csv(tmp_path / "broken.csv", index=False)
    monkeypatch.setenv("EDGEWAVE_DATA_PATH", str(tmp_path / "broken.csv"))
    refused = CliRunner().invoke(app, ["data", "check"])
    assert refused.exit_code == 2 and "missing column(s) ['Torque [Nm]']" in refused.output
