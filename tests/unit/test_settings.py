from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from edgewave.serving.errors import describe
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


def test_every_setting_is_in_the_readme_table() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = "\n".join(line for line in readme.splitlines() if line.startswith("| `EDGEWAVE_"))
    missing = [f"EDGEWAVE_{name.upper()}" for name in Settings.model_fields
               if f"`EDGEWAVE_{name.upper()}`" not in table]
    assert missing == [], f"settings missing from the README's table: {missing}"


def test_secrets_never_show_in_settings_dumps(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, git_token="ghp_secret_value", registry_password="pw-secret-value",
                        ssh_key="-----BEGIN OPENSSH PRIVATE KEY-----\nsecret-key-body\n")
    shown = repr(settings) + settings.model_dump_json() + str(settings.remote_access())
    assert not any(s in shown for s in ("ghp_secret_value", "pw-secret-value", "secret-key-body"))
    assert settings.remote_access().git_token == "ghp_secret_value", "the value is still there to use"


@pytest.mark.parametrize(("variable", "url"), [
    ("EDGEWAVE_DESIRED_STATE_REMOTE", "https://ghp_token123@github.com/plant/desired.git"),
    ("EDGEWAVE_MONITORING_STORE_URL", "sftp://site:password@127.0.0.1:2222/store"),
    ("EDGEWAVE_TRACKING_URI", "http://admin:admin@127.0.0.1:5050"),
    ("EDGEWAVE_BUNDLE_STORE_URL", "s3://bundles/x?X-Amz-Signature=abc"),
])
def test_a_credential_in_a_url_setting_is_refused_naming_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                      variable: str, url: str) -> None:
    monkeypatch.setenv(variable, url)
    with pytest.raises(ValidationError, match="carries a credential") as caught:
        Settings(home=tmp_path)
    shown = describe(caught.value)  # what the command line prints
    assert variable.removeprefix("EDGEWAVE_").lower() in shown and url not in shown
    monkeypatch.setenv(variable, "ssh://git@127.0.0.1:2222/srv/desired.git")
    Settings(home=tmp_path)  # a user name alone is not a secret


def test_the_retry_schedule_of_server_steps_comes_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgewave.tasks.platform.runs import retried
    from edgewave.tasks.release import steps

    monkeypatch.setenv("EDGEWAVE_REMOTE_RETRY_DELAYS_SECONDS", "[0.5, 1]")
    configured = retried(steps.register, Settings())
    assert (configured.retries, configured.retry_delay_seconds) == (2, [0.5, 1])
    assert configured.fn is steps.register.fn and configured.name == steps.register.name
    assert (steps.register.retries, steps.register.retry_delay_seconds) == (4, [2, 5, 15, 30]), "module untouched"
    monkeypatch.setenv("EDGEWAVE_REMOTE_RETRY_DELAYS_SECONDS", "[]")
    assert retried(steps.store_bundle, Settings()).retries == 0
