"""The loop across a real network boundary. Three sites run as containers of the serving image
that share nothing with the control plane but the network: Git over SSH (Debian's OpenSSH on a
high loopback port), bundles from the OCI registry by digest, sample windows to an SFTP store
where each site's account may write only its own prefix. Everything the control plane does
goes through the `edgewave` command line, as a user's would.

The sites follow the desired state's change hint (an OCI tag the controller moves after each
commit that changes a site's file): between commits they ask the registry, not the Git host.

release → containers up → rollout in waves pushed over SSH → sites pull the bundle by digest →
traffic → sample windows reach the SFTP store → a drift check reads them → a bad model caught at
the canary and rolled back. Then: every wave is a commit on the remote, no container mounts
anything of the control plane, and no credential appears in any log, artifact, commit or store.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.rollout.telemetry import scrape
from edgewave.tasks.sim.traffic import Traffic
from tests import sshd
from tests.helpers import BIN, ai4i_traffic, edgewave_env, free_port, wait_for, write_fleet_file

SITES = ["site-0", "site-1", "site-2"]
REGISTRY_PASSWORD = "reg-pw-4f7c1e9a2b"  # the registry here has no auth; the password must still never leak
GIT_TOKEN = "ghp_e2eToken0123456789abcdef"  # set but unused (SSH remote): must never leak either


@pytest.fixture(scope="module")
def server():
    with sshd.running(SITES) as running:
        yield running


def private_key_lines(identity: sshd.Identity) -> list[str]:
    """The base64 body lines of a private key: any one of them in a log would be a leak."""
    return [line for line in identity.private_key.splitlines() if line and not line.startswith("-----")]


def quoted(value: str) -> str:
    return '"' + value + '"'


class ControlPlane:
    """The `edgewave` command line with this control plane's environment; records what it printed."""

    def __init__(self, home: Path, env: dict[str, str]) -> None:
        self.home, self.env, self.outputs = home, env, []

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([str(BIN / "edgewave"), *args], env=self.env, capture_output=True, text=True,
                                timeout=timeout)
        self.outputs.append(f"$ edgewave {' '.join(args)}\n{result.stdout}\n{result.stderr}")
        return result

    def last_json(self, result: subprocess.CompletedProcess) -> dict:
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        assert lines, result.stdout + result.stderr
        return json.loads(lines[-1])


@pytest.fixture
def control_plane(engine, server, tmp_path: Path):
    home = tmp_path / "control-plane"
    fleet = tmp_path / "fleet.yaml"
    ports = {site: free_port() for site in SITES}
    write_fleet_file(fleet, ports, analysis={"interval_seconds": 3, "measurements": 2, "min_requests_per_site": 30,
                                             "max_p99_latency_ratio": 2.0, "min_confidence_ratio": 0.85, "max_failure_rate_shift": 0.3,
                                             "inconclusive_limit": 4},
                     drift={"min_samples": 50, "min_sites": 1}, bake_seconds=2, convergence_deadline_seconds=90,
                     offline={"deadline_seconds": 30, "then": "fail"})
    env_dir = tmp_path / "site-env"
    env_dir.mkdir()
    known_hosts = server.known_hosts.read_text().strip()
    for site, identity in server.sites.items():
        (env_dir / f"{site}.env").write_text("\n".join([
            "# this site's own environment: its SSH identity and its account on the store",
            f"EDGEWAVE_SSH_KEY={quoted(identity.private_key.strip())}",
            f"EDGEWAVE_SSH_KNOWN_HOSTS={quoted(known_hosts)}",
            f"EDGEWAVE_MONITORING_STORE_URL={server.store_url(identity)}",
            "EDGEWAVE_REGISTRY_USERNAME=site", f"EDGEWAVE_REGISTRY_PASSWORD={REGISTRY_PASSWORD}",
            "EDGEWAVE_SYNC_INTERVAL_SECONDS=1", "EDGEWAVE_SAMPLE_FRACTION=1", "EDGEWAVE_SAMPLE_WINDOW_SECONDS=3",
        ]) + "\n")
    env = edgewave_env(
        home, EDGEWAVE_FLEET_PATH=str(fleet), EDGEWAVE_SITE_ENV_DIR=str(env_dir),
        EDGEWAVE_DESIRED_STATE_REMOTE=server.git_url(), EDGEWAVE_SSH_KEY_PATH=str(server.controller.key),
        EDGEWAVE_SSH_KNOWN_HOSTS_PATH=str(server.known_hosts),
        EDGEWAVE_MONITORING_STORE_URL=server.store_url(server.controller),
        EDGEWAVE_BUNDLE_REGISTRY=engine.registry, EDGEWAVE_IMAGE_REGISTRY=engine.registry,
        EDGEWAVE_DOCKER_HOST=engine.docker_host, EDGEWAVE_IMAGE_BASE=engine.base_image, EDGEWAVE_IMAGE_REQUIRED="true",
        EDGEWAVE_REGISTRY_USERNAME="release", EDGEWAVE_REGISTRY_PASSWORD=REGISTRY_PASSWORD, EDGEWAVE_GIT_TOKEN=GIT_TOKEN,
        EDGEWAVE_DESIRED_STATE_HINT=f"oci://{engine.registry}/edgewave/desired-state:{tmp_path.name}")
    cli = ControlPlane(home, env)
    _remove_site_volumes(engine)
    yield cli, load_fleet_file(fleet)
    down = cli("fleet", "down")
    assert down.returncode == 0, down.stderr
    _remove_site_volumes(engine)


def _remove_site_volumes(engine) -> None:
    import docker

    client = docker.DockerClient(base_url=engine.docker_host)
    for site in SITES:
        for container in client.containers.list(all=True, filters={"name": f"edgewave-site-{site}"}):
            container.remove(force=True)
        try:
            client.volumes.get(f"edgewave-site-{site}").remove(force=True)
        except docker.errors.NotFound:
            pass
    client.close()


def site_logs(cli: ControlPlane) -> str:
    """The last lines each container printed: what a failed assertion should show."""
    return "\n".join(f"--- {site}\n" + cli("fleet", "logs", site, "--lines", "30").stdout for site in SITES)


def remote_subjects(server) -> list[str]:
    result = subprocess.run(["git", "-c", "safe.directory=*", "--git-dir", str(server.repo), "log", "--format=%s",
                             "main"], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()


def served(fleet_file) -> dict[str, int | None]:
    versions = {}
    for site in fleet_file.fleet.sites:
        try:
            versions[site.id] = scrape(site.scrape_url, timeout=3).version
        except OSError:
            versions[site.id] = None
    return versions


def syncs(metrics_url: str) -> dict[str, float]:
    """A site's desired-state syncs by kind, from its /metrics."""
    import urllib.request

    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    return {kind: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                      if line.startswith(f'edgewave_agent_syncs_total{{kind="{kind}"}}'))
            for kind in ("fetched", "unchanged")}


def test_release_rollout_drift_and_rollback_with_sites_that_share_only_the_network(engine, server, control_plane,
                                                                                   tmp_path: Path) -> None:
    cli, fleet_file = control_plane
    started = time.monotonic()

    first = cli("release", "--seed", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    assert cli.last_json(first)["version"] == 1

    up = cli("fleet", "up", "--containers")
    assert up.returncode == 0, up.stdout + up.stderr
    with Traffic(fleet_file.fleet.sites, ai4i_traffic(), rate_per_site=20):
        rolled = cli("rollout", "1")
        assert rolled.returncode == 0, rolled.stdout + rolled.stderr + site_logs(cli)
        assert cli.last_json(rolled)["status"] == "succeeded"
        assert served(fleet_file) == {site: 1 for site in SITES}

        def windows_arrived() -> bool:
            return all(list((server.store_root / site).glob(f"{site}-*.parquet")) for site in SITES)
        try:
            wait_for(windows_arrived, 90, "sample windows of every site in the SFTP store")
        except TimeoutError:
            pytest.fail("no sample windows in the store; the sites said:\n" + site_logs(cli))
        drift = cli("drift", "check", "--json")
        assert drift.returncode == 0, drift.stdout + drift.stderr
        summary = json.loads(drift.stdout[drift.stdout.index("{"):])
        assert {c["site"]: c["status"] for c in summary["sites"]} == {site: "checked" for site in SITES}, \
            [(c["site"], c.get("detail")) for c in summary["sites"]]
        assert all(c["rows_new"] >= 50 and c["model_version"] == 1 for c in summary["sites"])

        bad = cli("release", "--seed", "2", "--shuffle-labels", "--force")
        assert bad.returncode == 0, bad.stdout + bad.stderr
        caught = cli("rollout", "2")
        assert caught.returncode == 1, caught.stdout + caught.stderr  # 1: the rollout did not succeed
        assert cli.last_json(caught)["status"] == "rolled_back"
        wait_for(lambda: served(fleet_file) == {site: 1 for site in SITES}, 60, "every site back on v1")
        # the waves above went out through the hint: between commits the sites asked the registry, not Git
        hinted = {site.id: syncs(site.scrape_url) for site in fleet_file.fleet.sites}
        assert all(s["unchanged"] > s["fetched"] > 0 for s in hinted.values()), hinted
    elapsed = time.monotonic() - started

    subjects = remote_subjects(server)
    first_rollout = cli.last_json(rolled)["rollout_id"]
    assert sum(s.startswith(f"{first_rollout}: wave") for s in subjects) == 2, subjects
    assert any("rollback after wave 1/2" in s for s in subjects), subjects

    digests = set()
    for site in SITES:
        record = json.loads((cli.home / "fleet" / f"{site}.json").read_text())
        assert record["kind"] == "container"
        import docker

        client = docker.DockerClient(base_url=engine.docker_host)
        attrs = client.api.inspect_container(record["container"])
        client.close()
        mounts = attrs["Mounts"]
        assert [(m["Type"], m["Name"], m["Destination"]) for m in mounts] == \
            [("volume", f"edgewave-site-{site}", "/var/lib/edgewave")], "nothing of the control plane is mounted"
        assert attrs["HostConfig"]["ReadonlyRootfs"] and attrs["HostConfig"]["NetworkMode"] == "host"
        logs = cli("fleet", "logs", site)
        assert "applied v1" in logs.stdout and "sha256:" in logs.stdout, logs.stdout[-2000:]
        digests |= {word for word in logs.stdout.split() if word.startswith("oci://")}
    assert digests and all("@sha256:" in d for d in digests), "bundles are pulled by digest"

    secrets = [REGISTRY_PASSWORD, GIT_TOKEN]
    for identity in [server.controller, *server.sites.values()]:
        secrets += private_key_lines(identity)
    history = subprocess.run(["git", "-c", "safe.directory=*", "--git-dir", str(server.repo), "log", "-p", "main"],
                             capture_output=True, text=True, check=True).stdout
    texts = {"commands' output": "\n".join(cli.outputs), "desired-state history": history,
             "container logs": "\n".join(cli("fleet", "logs", s).stdout for s in SITES)}
    for folder in (cli.home, server.store_root):  # MLflow, Prefect's database and artifacts, the store
        for path in folder.rglob("*"):
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("latin-1")
    leaks = {where: [s[:12] for s in secrets if s in text] for where, text in texts.items()}
    assert not {where: found for where, found in leaks.items() if found}, "credentials leaked"
    print(f"e2e across the network boundary: {elapsed:.0f} s from the first release to every site back on v1")
