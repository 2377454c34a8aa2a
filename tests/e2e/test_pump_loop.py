"""The whole loop on the second kind of machine, through the CLI a user runs: a centrifugal pump
(other sensors, other failure physics) declared only by `deployments/pump-dataset.yaml`.

`edgewave demo loop` releases a pump model, serves it on six local sites, rolls it out in waves
while the replayer sends pump rows, drifts two sites through the pump's own scenarios, finds
them with the drift check and rolls the retrained model out."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path

import pytest

from edgewave.serving.bundle import load_trusted_keys, verify_bundle
from edgewave.tasks.data.machines import simulate
from edgewave.tasks.data.pump import FEATURES as PUMP
from edgewave.tasks.data.spec import load_spec
from tests.helpers import DEPLOYMENTS, demo_loop_command, demo_loop_fleet, run_demo_loop

SPEC = DEPLOYMENTS / "pump-dataset.yaml"


@pytest.mark.beside_engine  # local sites, no Docker engine: it evens out make test's two lanes
@pytest.mark.temporary_api  # one command (`edgewave demo loop`) on Prefect's temporary API, as `make run` runs
# Deadlines for a busy machine: the loop takes ~6 min alone, but with both test lanes and another load on
# two cores its retraining (25,000 rows of feedback) alone took 7 min in one run, and 15 min ran out.
@pytest.mark.timeout(2700)
def test_release_serve_rollout_drift_and_retrain_on_pumps(tmp_path: Path) -> None:
    home = tmp_path / "home"
    fleet = demo_loop_fleet(tmp_path / "fleet.yaml")
    # one data seed: the retrained model differs from v1 by the sites' feedback, not by a fresh draw the
    # gate would judge
    edgewave = demo_loop_command(home, tmp_path / "fleet.yaml", EDGEWAVE_DATASET=str(SPEC),
                                 EDGEWAVE_MODEL_NAME="pump-failure", EDGEWAVE_TRAIN_ROWS="6000", EDGEWAVE_DATA_SEED="11")
    try:
        out = run_demo_loop(edgewave)

        # release → rollout of v1, drift found at the two drifted sites, v2 retrained and rolled out
        assert re.search(r"released pump-failure v1: staged", out), out[-4000:]
        assert "DRIFT DETECTED" in out, out[-4000:]
        drifted = {line.split()[1] for line in out.splitlines() if re.match(r"\W+plant-\S+ .*bearing_temperature_c", line)}
        assert {"plant-a-line-3", "plant-b-line-2"} <= drifted, out[-4000:]
        assert "retrained after drift: v2 staged" in out, out[-4000:]
        served = out.split("sites now serve: ")[-1].splitlines()[0]
        assert served.count("=v2") == 6, served

        # the registry holds pump models whose bundles take the pump's raw sensors only
        status = edgewave("status", "--json")
        registry = json.loads(status.stdout)["registry"]
        assert registry["aliases"]["production"] == 2
        versions = {v["version"]: v["tags"] for v in registry["versions"]}
        bundle = Path(versions[2]["bundle_url"].removeprefix("file://"))
        manifest = verify_bundle(bundle, load_trusted_keys(home / "keys"))
        assert [f.name for f in manifest.input.features] == list(PUMP)
        assert manifest.class_labels == ["running", "failure"]
        assert versions[2]["input_features"] == ",".join(PUMP)

        # a site answers pump rows with the pump's labels, and refuses milling rows naming what is missing
        site = fleet["fleet"]["sites"][0]
        rows = simulate(load_spec(SPEC), 5, 3)[list(PUMP)].to_dict("records")
        conn = http.client.HTTPConnection("127.0.0.1", site["port"], timeout=10)
        conn.request("POST", "/v1/predict", json.dumps({"instances": rows}), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        body = json.loads(answer.read())
        assert answer.status == 200 and body["model_version"] == 2, body
        assert {p["label"] for p in body["predictions"]} <= {"running", "failure"}
        milling = {"air_temperature_k": 300.0, "process_temperature_k": 310.0, "rotational_speed_rpm": 1500.0,
                   "torque_nm": 40.0, "tool_wear_min": 10.0, "product_quality": 0.0}
        conn.request("POST", "/v1/predict", json.dumps({"instances": [milling]}), {"Content-Type": "application/json"})
        answer = conn.getresponse()
        refusal = answer.read().decode()
        assert answer.status == 422 and "flow_m3h" in refusal, refusal
        conn.request("GET", "/openapi.json")
        schema = json.dumps(json.loads(conn.getresponse().read()))
        assert all(name in schema for name in PUMP) and "air_temperature_k" not in schema
    finally:
        edgewave("fleet", "down", timeout=120)
