"""The release flow against a real `mlflow server` that comes up only after the flow began."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from mlflow import MlflowClient

from tests.helpers import BIN, edgewave_env, free_port, http_ok, start_mlflow_server, stop, wait_for


def test_task_retries_carry_the_flow_until_the_server_is_up(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    flow_log = tmp_path / "flow.log"
    flow = subprocess.Popen(
        [str(BIN / "edgewave"), "release", "--seed", "5"],
        env=edgewave_env(tmp_path / "home", EDGEWAVE_TRACKING_URI=uri),
        stdout=open(flow_log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    server = None
    try:
        # The first MLflow call fails (nothing listens yet) and Prefect schedules a retry; Prefect's own
        # lines go to the run log on disk, not the terminal
        run_log = tmp_path / "home" / "logs" / "runs.log"
        wait_for(lambda: (run_log.exists() and "Retry 1/" in run_log.read_text(errors="replace"))
                 or flow.poll() is not None, timeout=240, what="the first task retry")
        assert flow.poll() is None, flow_log.read_text()
        assert not http_ok(f"{uri}/health")

        server = start_mlflow_server(tmp_path / "mlflow-server", port, tmp_path / "mlflow.log")
        flow.wait(timeout=420)
        output = flow_log.read_text(errors="replace")
        assert flow.returncode == 0, output
        summary = [json.loads(line) for line in output.splitlines() if line.startswith('{"model"')]
        assert summary and summary[-1]["version"] == 1

        client = MlflowClient(uri)
        staged = client.get_model_version_by_alias("machine-failure", "staging")
        assert staged.version == "1"
        assert staged.tags["bundle_url"].startswith((tmp_path / "home" / "bundles").as_uri())
        assert float(staged.tags["parity_max_abs_diff"]) <= 1e-4
    finally:
        stop(flow)
        if server is not None:
            stop(server)
