"""A dataset spec is refused at load, with the field path, when it cannot be right."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgewave.tasks.data.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parents[2]


def spec_with(tmp_path: Path, change) -> Path:
    data = yaml.safe_load((ROOT / "deployments" / "dataset.yaml").read_text())
    change(data)
    path = tmp_path / "dataset.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_the_shipped_spec_reads_the_published_ai4i_headers() -> None:
    spec = load_spec(ROOT / "deployments" / "dataset.yaml")
    assert [c.source for c in spec.columns] == ["Air temperature [K]", "Process temperature [K]",
                                                "Rotational speed [rpm]", "Torque [Nm]", "Tool wear [min]", "Type"]
    assert spec.target.source == "Machine failure" and spec.target.values == ("0", "1")


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: d["derived"].append({"name": "x", "expression": "torque_nm * spindle_rpm"}),
     "derived.3.expression: 'torque_nm * spindle_rpm': unknown column 'spindle_rpm'"),
    (lambda d: d["columns"][0].update(range=[350, 250]), "columns.0: range: min 350 > max 250"),
    (lambda d: d["target"].update(values=["1", "1"]), "target.values: a binary target needs two different values"),
    (lambda d: d["target"].update(values=["0", "1", "2"]), "target.values"),
    (lambda d: d["columns"][5].update(categories=["L"]), "columns.5: categories: a category column needs at least two"),
    (lambda d: d["columns"].append({"name": "torque_nm"}), "names must be unique: ['torque_nm']"),
    (lambda d: d["derived"].append({"name": "y", "expression": "__import__('os')"}), "Call is not allowed"),
])
def test_a_bad_spec_is_refused_at_load_naming_the_field(tmp_path: Path, change, field: str) -> None:
    with pytest.raises(SpecError, match=None) as caught:
        load_spec(spec_with(tmp_path, change))
    assert field in str(caught.value) and "dataset.yaml" in str(caught.value)
