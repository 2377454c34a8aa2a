"""The edge stands alone: a fresh virtual environment with only `edgewave[edge]` installed (from
the wheelhouse the serving image is built from, not this dev venv) starts a site with
`edgewave-site` and serves a verified bundle."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from edgewave.serving.bundle import load_trusted_keys
from edgewave.serving.model import load_model
from edgewave.tasks.data.ai4i import FEATURES
from edgewave.tasks.release.image import wheel_cache, wheelhouse
from tests.helpers import free_port, http_ok, stop, wait_for

CONTROL_PLANE = ("torch", "mlflow", "prefect", "evidently", "sklearn", "pandas", "onnx", "skl2onnx")


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    wheels = wheelhouse(wheel_cache())
    venv = tmp_path_factory.mktemp("edge-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-index",
                              "--find-links", str(wheels), "edgewave[edge]"], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stdout + install.stderr
    return venv


def test_an_edge_only_venv_has_no_control_plane_and_serves_a_site(edge_venv: Path, bundles, split,
                                                                   tmp_path: Path) -> None:
    python = str(edge_venv / "bin" / "python")
    probe = ("import importlib.util, sys, edgewave.serving.site, edgewave.serving.agent;"
             f"print(','.join(m for m in {CONTROL_PLANE!r} if importlib.util.find_spec(m)))")
    installed = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=120)
    assert installed.returncode == 0, installed.stderr
    assert installed.stdout.strip() == "", f"the edge venv has control-plane packages: {installed.stdout}"

    port = free_port()
    log = tmp_path / "site.log"
    env = {"EDGEWAVE_HOME": str(tmp_path / "home"), "EDGEWAVE_TRUSTED_KEYS_DIR": str(bundles.home / "keys"),
           "PATH": "/usr/bin:/bin"}
    site = subprocess.Popen([str(edge_venv / "bin" / "edgewave-site"), "--bundle", str(bundles.v1),
                             "--port", str(port)], env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/readyz") or site.poll() is not None, 60, "the edge site")
        assert site.poll() is None, log.read_text()
        rows = split.x_test[:16]
        body = json.dumps({"instances": [dict(zip(FEATURES, map(float, r))) for r in rows]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = json.loads(response.read())
    finally:
        stop(site)
    assert answer["model_version"] == 1
    served = np.array([p["probability"] for p in answer["predictions"]])
    expected = load_model(bundles.v1, load_trusted_keys(bundles.home / "keys")).failure_probability(
        rows.astype(np.float32))
    assert np.max(np.abs(served - expected)) <= 1e-6
