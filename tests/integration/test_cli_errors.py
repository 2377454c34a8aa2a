"""Every expected failure of the command line: exit code 2, one line naming what and where, no
traceback (and the traceback with --debug). Each runs the real `edgewave` executable."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import Bundles
from tests.helpers import BIN, edgewave_env, free_port

DEPLOYMENTS = Path(__file__).resolve().parents[2] / "deployments"
SPEC = DEPLOYMENTS / "dataset.yaml"


def edgewave(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "edgewave"), *args], env=edgewave_env(home, **env), capture_output=True,
                          text=True, timeout=300)


def refused(result: subprocess.CompletedProcess, *named: str) -> str:
    """The one line a refusal prints, after checking what every refusal must be."""
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, output
    for text in named:
        assert text in lines[0], lines[0]
    return lines[0]


def test_a_bad_data_file_is_refused_before_a_flow_runs(tmp_path: Path) -> None:
    data = tmp_path / "plant.csv"
    data.write_text("Air temperature [K],Torque [Nm]\n300.1,40\n")  # the published headers, too few of them
    result = edgewave(tmp_path / "home", "release", EDGEWAVE_DATA_PATH=str(data))
    refused(result, str(data), "missing column(s) ['Process temperature [K]'")
    assert not (tmp_path / "home" / "mlflow.db").exists(), "nothing ran"


def test_an_empty_data_file_is_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "plant.csv"
    data.write_bytes(b"")
    result = edgewave(tmp_path / "home", "release", EDGEWAVE_DATA_PATH=str(data))
    refused(result, str(data), "empty (0 bytes)")
    assert not (tmp_path / "home" / "mlflow.db").exists(), "nothing ran"


def test_an_unreadable_data_file_is_one_line_naming_it(tmp_path: Path) -> None:
    data = tmp_path / "plant.csv"
    data.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe\xfd" * 64)  # a picture saved under the wrong name
    result = edgewave(tmp_path / "home", "release", EDGEWAVE_DATA_PATH=str(data))
    refused(result, str(data), "cannot read")


def test_a_refused_column_keeps_the_unit_in_its_header(tmp_path: Path) -> None:
    """`Rotational speed [rpm]` is printed as it is, not read as a markup tag and dropped."""
    data = tmp_path / "plant.csv"
    data.write_text("Type,Air temperature [K],Process temperature [K],Rotational speed [rpm],Torque [Nm],"
                    "Tool wear [min],Machine failure\nM,300.1,310.2,fast,40,10,0\n")
    result = edgewave(tmp_path / "home", "data", "check", str(data))
    refused(result, str(data), "'Rotational speed [rpm]' should be float")


def test_an_unregistered_version_is_refused_in_one_line_without_prefect_s_traceback(tmp_path: Path) -> None:
    result = edgewave(tmp_path / "home", "rollout", "99", EDGEWAVE_FLEET_PATH=str(DEPLOYMENTS / "demo-fleet.yaml"))
    refused(result, "rollout refused", "machine-failure v99 is not registered")
    run_log = tmp_path / "home" / "logs" / "runs.log"
    assert "LookupError" in run_log.read_text(), "Prefect's run log, traceback included, is kept on disk"


def test_a_bad_dataset_spec_names_the_field(tmp_path: Path) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(SPEC.read_text().replace("range: [0, 6000]", "range: [6000, 0]"))
    result = edgewave(tmp_path / "home", "release", EDGEWAVE_DATASET=str(spec))
    refused(result, str(spec), "columns.2", "min")


def test_a_bad_fleet_file_names_the_field(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text((DEPLOYMENTS / "fleet.yaml").read_text().replace("measurements: 3", "measurements: three"))
    result = edgewave(tmp_path / "home", "rollout", "1", EDGEWAVE_FLEET_PATH=str(fleet))
    refused(result, str(fleet), "rollout.analysis.measurements")


def test_an_unreachable_mlflow_server_is_named_at_once(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = edgewave(tmp_path / "home", "status", EDGEWAVE_TRACKING_URI=uri)
    refused(result, f"MLflow at {uri} does not answer", "EDGEWAVE_TRACKING_URI")


def test_a_required_image_without_an_engine_is_refused_before_training(tmp_path: Path) -> None:
    socket = tmp_path / "no-engine.sock"
    result = edgewave(tmp_path / "home", "release", EDGEWAVE_IMAGE_REQUIRED="true",
                      EDGEWAVE_DOCKER_HOST=f"unix://{socket}")
    refused(result, "no Docker engine at unix://", "EDGEWAVE_IMAGE_REQUIRED")
    assert not (tmp_path / "home" / "mlflow.db").exists(), "nothing was trained"


def test_a_refused_bundle_is_one_line_naming_the_bundle_and_the_reason(tmp_path: Path, bundles: Bundles) -> None:
    result = edgewave(tmp_path / "home", "serve", "--bundle", str(bundles.corrupt), "--port", str(free_port()),
                      "--host", "127.0.0.1", EDGEWAVE_TRUSTED_KEYS_DIR=str(bundles.home / "keys"))
    refused(result, f"refused bundle {bundles.corrupt} (HashMismatchError)", "model.onnx", "does not match")


@pytest.mark.parametrize("how", [("--debug",), ()])
def test_debug_shows_the_traceback(tmp_path: Path, how: tuple[str, ...]) -> None:
    data = tmp_path / "plant.csv"
    data.write_text("Torque [Nm]\n40\n")
    env = {"EDGEWAVE_DATA_PATH": str(data)} | ({} if how else {"EDGEWAVE_DEBUG": "1"})
    result = edgewave(tmp_path / "home", *how, "release", **env)
    assert result.returncode == 1, result.stderr  # an uncaught exception: Python's own exit code
    assert "Traceback" in result.stderr and "DataValidationError" in result.stderr
