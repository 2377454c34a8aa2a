"""A real MLflow server stopped during a release and during a rollout: both fail naming the
server, nothing is staged or promoted on a guess; started again, re-runs succeed (the rollout's
promotion, interrupted after its last wave, is finished by the next run)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import registry
from edgewave.tasks.rollout.telemetry import scrape
from edgewave.tasks.sim.traffic import Traffic
from tests.helpers import (
    BIN,
    ai4i_traffic,
    edgewave_env,
    free_port,
    http_ok,
    start_mlflow_server,
    stop,
    wait_for,
    write_fleet_file,
)


def test_a_registry_outage_fails_release_and_rollout_naming_the_server_and_reruns_recover(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    state = tmp_path / "mlflow"

    def start() -> subprocess.Popen:
        server = start_mlflow_server(state, port, tmp_path / "mlflow.log")
        wait_for(lambda: http_ok(f"{uri}/health"), 90, "the MLflow server")
        return server

    home = tmp_path / "home"
    fleet = tmp_path / "fleet.yaml"
    ports = [free_port(), free_port()]
    write_fleet_file(fleet, {f"site-{i}": p for i, p in enumerate(ports)},
               analysis={"interval_seconds": 1.5, "measurements": 2, "min_requests_per_site": 15},
               bake_seconds=0, convergence_deadline_seconds=30)
    # a short retry schedule: the outage outlasts it all the same (the default waits 52 s per step)
    env = edgewave_env(home, EDGEWAVE_TRACKING_URI=uri, EDGEWAVE_FLEET_PATH=str(fleet), EDGEWAVE_TRAIN_ROWS="2000",
                       EDGEWAVE_REMOTE_RETRY_DELAYS_SECONDS="[1, 2]")
    settings = Settings(home=home, tracking_uri=uri, fleet_path=fleet)

    def edgewave(*args: str, wait: bool = True):
        command = [str(BIN / "edgewave"), *args]
        if not wait:
            return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    server = start()
    try:
        assert edgewave("release", "--seed", "1").returncode == 0

        # a release while the server goes away
        releasing = edgewave("release", "--seed", "2", wait=False)
        run_log = home / "logs" / "runs.log"  # Prefect's run log of every command, on disk
        wait_for(lambda: run_log.exists() and "data seed 2" in run_log.read_text(), 120, "the release to start")
        # the release has started; the server goes away under it
        stop(server)
        out, err = releasing.communicate(timeout=600)
        assert releasing.returncode == 2, out + err  # an unreachable server: a failure a person can act on
        assert "release failed: RegistryUnavailable" in err and f"127.0.0.1:{port}" in err, err[-3000:]
        assert "Traceback" not in err.split("release failed")[-1]
        server = start()
        assert registry.alias_version(settings, "staging") == 1, "nothing staged on a guess"
        assert [v["version"] for v in registry.registry_state(settings)["versions"]] == [1], "nothing registered"
        rerun = edgewave("release", "--seed", "2")
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        assert json.loads(rerun.stdout.strip().splitlines()[-1])["version"] == 2

        # a rollout while the server goes away after its last wave
        up = edgewave("fleet", "up")
        assert up.returncode == 0, up.stderr
        sites = load_fleet_file(fleet).fleet.sites
        with Traffic(sites, ai4i_traffic(), rate_per_site=30):
            rolling = edgewave("rollout", "1", wait=False)
            wait_for(lambda: all(_serves(site) == 1 for site in sites), 180, "every site on v1")
            stop(server)  # the waves are done; the analysis needs no registry, the promotion does
            out, err = rolling.communicate(timeout=600)
        assert rolling.returncode == 2, out + err
        assert "rollout failed: RegistryUnavailable" in err and f"127.0.0.1:{port}" in err, err[-3000:]
        server = start()
        assert registry.alias_version(settings, "production") is None, "nothing promoted on a guess"
        again = edgewave("rollout", "1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert registry.alias_version(settings, "production") == 1, "the next run finished the promotion"
    finally:
        edgewave("fleet", "down")
        stop(server)
        shutil.rmtree(state, ignore_errors=True)


def _serves(site) -> int | None:
    try:
        return scrape(site.scrape_url, timeout=2).version
    except OSError:
        return None
