"""A Kubernetes pod as a full site, for real: the serving image with v1 baked in runs as the
k8s base runs it (`--bundle /opt/edgewave/bundle --site <id>`: image-pinned), in a read-only
container of a real Docker engine, with only the network to reach its stores: its agent ships
sample windows to the SFTP monitoring store and reads the site's desired state over SSH, and
while that desired state names v2 the pod keeps serving v1 (Argo CD, not the agent, replaces
pods)."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from edgewave.serving.desired import DesiredState
from edgewave.tasks.data.ai4i import FEATURES
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import image as images
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.telemetry import scrape
from tests import sshd
from tests.helpers import free_port, http_ok, public_keys, wait_for

SITE = "line-k8s"


def test_an_image_pinned_pod_ships_windows_and_never_swaps_its_model(engine, bundles, split, tmp_path: Path) -> None:
    import docker

    outcome = images.release_image(engine.docker_host, engine.registry, engine.base_image, tmp_path / "images",
                                   public_keys(bundles.home / "keys"), bundles.v1, "machine-failure", 1,
                                   bundles.sha(bundles.v1))
    assert outcome.status == "pushed", outcome.reason
    client = docker.DockerClient(base_url=engine.docker_host)
    with sshd.running([SITE]) as server:
        identity = server.sites[SITE]
        control = Settings(home=tmp_path / "control-plane", desired_state_remote=server.git_url(),
                           ssh_key_path=server.controller.key, ssh_known_hosts_path=server.known_hosts)
        DesiredStateRepo.of(control).ensure().commit(
            [DesiredState(site=SITE, model="machine-failure", version=2, bundle_url=bundles.v2.as_uri(),
                          sha256=bundles.sha(bundles.v2), rollout_id="ro-t")], "ro-t: wave 1/1 -> line-k8s")
        port = free_port()
        container = client.containers.run(
            outcome.tag, command=["--bundle", "/opt/edgewave/bundle", "--site", SITE], detach=True,
            network_mode="host", read_only=True, tmpfs={"/tmp": "", "/var/lib/edgewave": "uid=10001,gid=10001"},
            environment={"EDGEWAVE_SERVE_HOST": "127.0.0.1", "EDGEWAVE_SERVE_PORT": str(port),
                         "EDGEWAVE_SSH_KEY": identity.private_key, "EDGEWAVE_SSH_KNOWN_HOSTS": server.known_hosts.read_text(),
                         "EDGEWAVE_DESIRED_STATE_REMOTE": server.git_url(),
                         "EDGEWAVE_MONITORING_STORE_URL": server.store_url(identity),
                         "EDGEWAVE_SYNC_INTERVAL_SECONDS": "1", "EDGEWAVE_SAMPLE_FRACTION": "1",
                         "EDGEWAVE_SAMPLE_WINDOW_SECONDS": "2"})
        try:
            wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/readyz"), 60, "the pod's /readyz")
            body = json.dumps({"instances": [dict(zip(FEATURES, map(float, r))) for r in split.x_test[:50]]}).encode()
            for _ in range(5):
                request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/predict", data=body,
                                                 headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=10) as response:
                    assert json.loads(response.read())["model_version"] == 1

            def shipped() -> list[Path]:
                return sorted((server.store_root / SITE).glob(f"{SITE}-*.parquet"))
            wait_for(lambda: bool(shipped()), 60, "sample windows in the SFTP store")
            metrics = f"http://127.0.0.1:{port}/metrics"
            wait_for(lambda: "edgewave_agent_desired_version 2.0" in _text(metrics), 30, "the desired state read")
            first = _gauge(metrics, "edgewave_agent_last_sync_timestamp_seconds")
            wait_for(lambda: _gauge(metrics, "edgewave_agent_last_sync_timestamp_seconds") >= first + 3, 60,
                     "three more agent cycles (1 s apart) with v2 desired")
            text = _text(metrics)
            assert scrape(metrics).version == 1, "the pod serves its image's model, whatever the desired state says"
            assert "edgewave_agent_offline 0.0" in text, "the store and the remote are reached"
            assert "edgewave_model_swaps_total 1.0" in text, "one model loaded (the image's), never swapped"
            logs = container.logs().decode()
            assert "image-pinned: the desired state names v2; this pod serves v1" in logs, logs[-2000:]
            assert logs.count("image-pinned: the desired state names v2") == 1, "said once, not every cycle"
            assert identity.private_key.strip().splitlines()[1] not in logs, "no credential in the pod's log"
        finally:
            container.remove(force=True)
            client.close()


def _gauge(url: str, name: str) -> float:
    """A gauge's value in the site's /metrics (0 when absent)."""
    return next((float(line.rsplit(" ", 1)[1]) for line in _text(url).splitlines() if line.startswith(name + " ")), 0.0)


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()
