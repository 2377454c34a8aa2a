"""The serving image for real: a local Docker engine
(dockerd --iptables=false --ip6tables=false --bridge=none), a debootstrap base image, a build
from a wheelhouse with no network, the container run read-only with --network host, its
prediction equal to in-process ONNX Runtime, then a push to the local registry and a pull
back by digest."""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import numpy as np

from edgewave.serving.bundle import load_trusted_keys
from edgewave.serving.model import load_model
from edgewave.tasks.data.ai4i import FEATURES
from edgewave.tasks.release import image as images
from tests.helpers import free_port, http_ok, public_keys, wait_for


def test_the_image_serves_what_onnxruntime_computes_and_round_trips_the_registry(engine, bundles, split,
                                                                                  tmp_path: Path) -> None:
    import docker

    # what the release flow's image step does: context, build, push
    outcome = images.release_image(engine.docker_host, engine.registry, engine.base_image, tmp_path / "images",
                                   public_keys(bundles.home / "keys"), bundles.v1, "machine-failure", 1,
                                   bundles.sha(bundles.v1))
    assert outcome.status == "pushed", outcome.reason
    tag = outcome.tag
    assert tag == f"{engine.registry}/edgewave-serving:machine-failure-v1"
    client = docker.DockerClient(base_url=engine.docker_host)
    built_id = client.images.get(tag).id
    attrs = client.images.get(tag).attrs["Config"]
    assert attrs["User"] == "10001:10001" and attrs["Healthcheck"]["Test"][0] == "CMD"
    assert attrs["Labels"]["io.edgewave.model.version"] == "1"
    assert attrs["Labels"]["org.opencontainers.image.title"] == "edgewave-serving"
    size = client.images.get(tag).attrs["Size"]
    print(f"serving image: {size / 1e6:.1f} MB")
    assert size < 350e6, f"the serving image is {size / 1e6:.1f} MB, over its 350 MB budget"
    edge_only = client.containers.run(tag, entrypoint=["python3", "-c", "import importlib.util as u; print("
                                      "[m for m in ('edgewave.tasks', 'edgewave.flows', 'typer', 'rich') if u.find_spec(m)])"],
                                      network_mode="none", remove=True).decode().strip()
    assert edge_only == "[]", f"the image carries more than the edge: {edge_only}"
    loads = client.containers.run(tag, entrypoint=["python3", "-c", "import pyarrow.parquet, uvloop, httptools, "
                                  "cryptography.hazmat.primitives.asymmetric.ed25519, yaml, paramiko, dulwich.client, "
                                  "oras.client, onnxruntime, edgewave.serving.site; print('ok')"],
                                  network_mode="none", remove=True).decode().strip()
    assert loads == "ok", "every library a site uses loads from the (stripped) image"

    port = free_port()
    container = client.containers.run(
        tag, detach=True, network_mode="host", read_only=True,
        tmpfs={"/tmp": "", "/var/lib/edgewave": "uid=10001,gid=10001"},
        environment={"EDGEWAVE_SERVE_HOST": "127.0.0.1", "EDGEWAVE_SERVE_PORT": str(port)})
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "the container's /readyz")
        rows = split.x_test[:64]
        body = json.dumps({"instances": [dict(zip(FEATURES, map(float, r))) for r in rows]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            served = np.array([p["probability"] for p in json.loads(response.read())["predictions"]])
        expected = load_model(bundles.v1, load_trusted_keys(bundles.home / "keys")).failure_probability(
            rows.astype(np.float32))
        assert np.max(np.abs(served - expected)) <= 1e-6
        deadline = time.monotonic() + 60
        while client.api.inspect_container(container.id)["State"]["Health"]["Status"] == "starting":
            assert time.monotonic() < deadline, "HEALTHCHECK never reported"
            time.sleep(1)
        assert client.api.inspect_container(container.id)["State"]["Health"]["Status"] == "healthy"
    finally:
        container.remove(force=True)

    assert outcome.digest_ref.startswith(f"{engine.registry}/edgewave-serving@sha256:")
    client.images.remove(tag, force=True)
    pulled = client.images.pull(outcome.digest_ref)
    assert pulled.id == built_id, "the registry gives back exactly the image that was built"
    client.close()
