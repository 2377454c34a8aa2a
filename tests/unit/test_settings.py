from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgewave.tasks.platform.settings import Settings


def test_embedded_defaults_all_live_under_home(tmp_path: Path) -> None:
    s = Settings(home=tmp_path / "state")
    home = (tmp_path / "state").resolve()
    assert s.mlflow_tracking_uri == f"sqlite:///{home / 'mlflow.db'}"
    assert s.bundle_store == (home / "bundles").as_uri()
    assert s.signing_key == home / "keys" / "signing.key"
    assert s.trusted_keys == home / "keys"
    assert not s.uses_tracking_server


def test_environment_with_prefix_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("EDGEWAVE_HOME", str(tmp_path))
    monkeypatch.setenv("EDGEWAVE_TRACKING_URI", "http://127.0.0.1:5000")
    monkeypatch.setenv("EDGEWAVE_BUNDLE_STORE_URL", "memory://bundles")
    monkeypatch.setenv("EDGEWAVE_GATE_TOLERANCE", "0.05")
    s = Settings()
    assert s.home == tmp_path.resolve()
    assert s.uses_tracking_server and s.mlflow_tracking_uri == "http://127.0.0.1:5000"
    assert s.bundle_store == "memory://bundles"
    assert s.gate_tolerance == 0.05


def test_invalid_values_fail_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEWAVE_GATE_TOLERANCE", "2")
    with pytest.raises(ValidationError, match="gate_tolerance"):
        Settings()
    monkeypatch.delenv("EDGEWAVE_GATE_TOLERANCE")
    with pytest.raises(ValidationError, match="model_name"):
        Settings(model_name="bad name/with slash")


def test_runtime_environment_keeps_state_home_and_telemetry_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("PREFECT_HOME", "PREFECT_SERVER_ANALYTICS_ENABLED", "MLFLOW_DISABLE_TELEMETRY", "DO_NOT_TRACK"):
        monkeypatch.delenv(var, raising=False)
    Settings(home=tmp_path / "h").apply_runtime_environment()
    assert os.environ["PREFECT_HOME"] == str((tmp_path / "h" / "prefect").resolve())
    assert os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert (tmp_path / "h").is_dir()
