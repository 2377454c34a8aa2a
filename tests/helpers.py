"""Helpers for tests that start real processes: free ports, bounded waits, stop by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from edgewave.tasks.platform.processes import http_ok  # noqa: F401  (re-exported for tests)

if TYPE_CHECKING:
    from edgewave.tasks.rollout.gitops import DesiredStateRepo

BIN = Path(sys.executable).parent
DEPLOYMENTS = Path(__file__).resolve().parents[1] / "deployments"


CANARY_THEN_REST = [{"name": "canary", "count": 1}, {"name": "rest", "percent": 100}]
ALL_AT_ONCE = [{"name": "all", "percent": 100}]


def demo_loop_fleet(path: Path, drift: dict | None = None) -> dict:
    """The shipped fleet and policy for a `demo loop` test, written to `path`: every site on a free port,
    two shorter waves and faster measurements (the loop's logic is the same, CI's clock is not); `drift`
    overrides fields of the drift policy."""
    import yaml

    fleet = yaml.safe_load((DEPLOYMENTS / "fleet.yaml").read_text())
    for site in fleet["fleet"]["sites"]:
        site["port"] = free_port()
    fleet["rollout"].update(waves=CANARY_THEN_REST, bake_seconds=2)
    # a retrained model may flag a third more of a 20-request window at a drifted site (0.34 measured once on
    # the pump, against 0.3 shipped); a broken model flags every row, a shift far above 0.5
    fleet["rollout"]["analysis"].update(interval_seconds=2, measurements=2, min_requests_per_site=20,
                                        max_failure_rate_shift=0.5)
    fleet["drift"].update(drift or {})
    path.write_text(yaml.safe_dump(fleet))
    return fleet


def demo_loop_command(home: Path, fleet_path: Path, **settings: str) -> Callable[..., subprocess.CompletedProcess]:
    """`edgewave ARGS…` for a `demo loop` test: its state under `home`, the fleet file at `fleet_path`, the
    EDGEWAVE_ `settings`, tables wide enough to read in the output, and no Docker engine (local sites)."""
    env = {k: v for k, v in edgewave_env(home, EDGEWAVE_FLEET_PATH=str(fleet_path), COLUMNS="250", **settings).items()
           if k != "DOCKER_HOST"}

    def edgewave(*args: str, timeout: float = 2400) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "edgewave"), *args], env=env, capture_output=True, text=True, timeout=timeout)
    return edgewave


def run_demo_loop(edgewave: Callable[..., subprocess.CompletedProcess]) -> str:
    """`edgewave demo loop --keep-fleet`, printed whole (for `pytest -s` and a failure's report); its output,
    once it exited 0."""
    demo = edgewave("demo", "loop", "--keep-fleet")
    out = demo.stdout + demo.stderr
    print(out)
    assert demo.returncode == 0, out[-6000:]
    return out


# Tests share two cores with each other (and, in the loaded CI runs, with two busy loops): there one
# scheduling stall is a p99 of tens of milliseconds for a site answering in one, and a rollout whose
# test is about something else was rolled back on latency (8 ms -> 28 ms against a control's 12 -> 5).
# Below this p99 a wave's latency passes whatever the ratio; a test about latency judgement sets its own.
BUSY_MACHINE_P99_FLOOR = 0.25


def write_fleet_file(path: Path, sites: list[dict] | dict[str, int], waves: list[dict] | None = None,
               analysis: dict | None = None, drift: dict | None = None, **rollout: object) -> Path:
    """Write a fleet file (the one factory of the tests): `sites` as Site fields, or site id → port;
    `waves` (default: a canary of one, then the rest), analysis thresholds and other rollout policy
    fields, and a drift policy. Returns `path`."""
    import yaml

    listed = [{"id": s, "port": port} for s, port in sites.items()] if isinstance(sites, dict) else sites
    policy: dict = {"waves": waves or CANARY_THEN_REST, **rollout}
    policy["analysis"] = {"p99_floor_seconds": BUSY_MACHINE_P99_FLOOR, **(analysis or {})}
    data: dict = {"fleet": {"sites": listed}, "rollout": policy}
    if drift:
        data["drift"] = drift
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def ai4i_traffic():
    """The traffic source of the shipped AI4I spec: its simulated milling machine."""
    from edgewave.tasks.data.spec import load_spec
    from edgewave.tasks.sim.traffic import Simulated

    return Simulated(load_spec(DEPLOYMENTS / "dataset.yaml"))


_HANDED_OUT: set[int] = set()
# Below Linux's ephemeral range (32768+), so no outgoing connection's port is ever handed out;
# scripts/test-lanes.sh gives each lane half of it, so two lanes never pick the same port.
_LANES = {"engine": range(20000, 26384), "other": range(26384, 32768)}


def free_port() -> int:
    """A port on 127.0.0.1 that binds now and that this run has not handed out before (the
    kernel's port 0 may give the same port twice once the first socket is closed)."""
    import random

    ports = _LANES.get(os.environ.get("EDGEWAVE_TEST_LANE", ""), range(20000, 32768))
    for _ in range(1000):
        port = random.choice(ports)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError(f"no free port in {ports}")


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def stop(process: subprocess.Popen, timeout: float = 15) -> None:
    """Stop a process group we started, by its pid: TERM, then KILL."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


def start_mlflow_server(state: Path, port: int, log: Path) -> subprocess.Popen:
    """A real `mlflow server` (one worker) on 127.0.0.1 with its own SQLite and artifacts."""
    from edgewave.tasks.fleet.servers import MLFLOW_SERVER_ENV, mlflow_server_command

    state.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(mlflow_server_command(port, state / "mlflow.db", state / "artifacts"),
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT, env={**os.environ, **MLFLOW_SERVER_ENV},
                            start_new_session=True)


def public_keys(folder: Path) -> str:
    """The PEM text of every public key in `folder`: what a site is given to trust."""
    return "".join(p.read_text() for p in sorted(folder.glob("*.pub")))


def edgewave_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for an `edgewave` subprocess whose state is all under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWAVE_", "PREFECT_", "MLFLOW_"))}
    # 4,000 rows and one search trial: a release in ~40 s instead of ~80 s (quiet machine). The search
    # itself is tested in tests/unit/test_train.py; these tests are about what a release leads to.
    env.update({"EDGEWAVE_HOME": str(home), "EDGEWAVE_TRAIN_ROWS": "4000", "EDGEWAVE_SEARCH_BUDGET": "1", **extra})
    server = os.environ.get("EDGEWAVE_TEST_PREFECT_API_URL")  # the e2e session's server: tests/e2e/conftest.py
    if server and "PREFECT_API_URL" not in extra:
        env["PREFECT_API_URL"] = server
    return env


TEST_FLEET = "test-fleet"  # the fleet id `start_site` gives its sites (readers check it: telemetry.wrong_site)


def start_site(home: Path, port: int, log: Path, *args: str, **env: str) -> subprocess.Popen:
    """A real site process (`edgewave serve ...`) on 127.0.0.1:port, trusting `home/keys`, of the fleet
    TEST_FLEET; waits until it listens."""
    process = subprocess.Popen(
        [str(BIN / "edgewave"), "serve", "--port", str(port), "--host", "127.0.0.1", *args],
        env=edgewave_env(home, **{"EDGEWAVE_TRUSTED_KEYS_DIR": str(home / "keys"), "EDGEWAVE_FLEET_ID": TEST_FLEET,
                                  **env}), stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{port}/healthz") or process.poll() is not None, 30,
                 f"site on port {port}")
    except TimeoutError:
        stop(process)
        raise
    if process.poll() is not None:
        raise RuntimeError(f"site exited with {process.returncode}: {log.read_text()}")
    return process


def post_json(conn, path: str, body: bytes | str, content_type: str = "application/json") -> tuple[int, dict]:
    """POST on a keep-alive http.client connection; returns (status, decoded JSON body)."""
    import json

    conn.request("POST", path, body=body, headers={"Content-Type": content_type})
    response = conn.getresponse()
    data = response.read()
    return response.status, json.loads(data) if data else {}


class DesiredRepo:
    """A desired-state Git repository, written the way the rollout flow writes it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "--initial-branch", "main")
        self._git("config", "user.email", "tests@edgewave.invalid")
        self._git("config", "user.name", "edgewave tests")
        (path / "README").write_text("desired state\n")
        self._git("add", "README")
        self._git("commit", "--quiet", "-m", "init")

    def _git(self, *args: str) -> None:
        subprocess.run(["git", *args], cwd=self.path, check=True, capture_output=True)

    def set(self, site: str, version: int, bundle: Path, sha256: str, rollout_id: str = "ro-test",
            bundle_url: str | None = None, rollback: bool = False) -> None:
        """Desired state of one site, committed; `rollback` marks a downgrade the agent may apply."""
        import yaml

        target = self.path / "sites" / f"{site}.yaml"
        target.parent.mkdir(exist_ok=True)
        target.write_text(yaml.safe_dump({"site": site, "model": "machine-failure", "version": version,
                                          "bundle_url": bundle_url or bundle.as_uri(), "sha256": sha256, "rollout_id": rollout_id,
                                          **({"rollback": True} if rollback else {})}))
        self._git("add", "-A")
        self._git("commit", "--quiet", "-m", f"{rollout_id}: {site} -> v{version}")


def register_bundle(settings, family: str, bundle: Path, model: bytes, tags: dict | None = None) -> int:
    """Register a signed bundle's model in MLflow the way a release tags it; returns the version."""
    import json

    from edgewave.tasks.release import registry

    run_id = registry.log_training_run(settings, f"test-{bundle.name}", family, {}, {}, "f" * 64, 0.0)
    version = registry.register_candidate(settings, run_id, model, {})
    sha = json.loads((bundle / "bundle.json").read_text())["model"]["sha256"]
    registry.tag_version(settings, version.version, {"bundle_url": bundle.as_uri(), "onnx_sha256": sha, **(tags or {})})
    return version.version


def desired_repo(folder: Path, name: str = "desired") -> DesiredStateRepo:
    """A desired-state remote (bare, `<name>.git`) under `folder` and a controller's clone of it."""
    from edgewave.tasks.rollout.gitops import DesiredStateRepo

    return DesiredStateRepo(str(folder / f"{name}.git"), folder / f"{name}-clone").ensure()


def remote_subjects(remote: str | Path) -> list[str]:
    """Commit subjects on the remote's main branch, newest first: what Argo CD or an agent would see."""
    result = subprocess.run(["git", "--git-dir", str(remote), "log", "--format=%s", "main"], capture_output=True,
                            text=True, check=True)
    return [line for line in result.stdout.splitlines() if line]


def register_versions(settings, tags: dict[int, dict[str, str]], production: int | None = None) -> None:
    """Model versions in the MLflow registry carrying the tags a release writes (for simulated sites,
    whose versions point at no real model), and @production on one of them."""
    from edgewave.tasks.release import registry

    client = registry.client(settings)
    client.create_registered_model(settings.model_name)
    for version in sorted(tags):
        client.create_model_version(settings.model_name, f"file:///sim/v{version}", tags=tags[version])
    if production is not None:
        registry.promote(settings, production)


@contextmanager
def running_prometheus(config: dict, folder: Path, mode: str = "server", port: int | None = None) -> Iterator[str]:
    """A real Prometheus (Debian's package, 2.42) on 127.0.0.1 with `config` (a prometheus.yml as a
    dict), its data under `folder`; yields its URL once ready, stops it by pid after. `mode`:
    "server", "receiver" (a server that also accepts remote write: the central one) or "agent"
    (scrapes and remote-writes only)."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = port or free_port()
    storage = {"agent": ["--enable-feature=agent", f"--storage.agent.path={folder / 'wal'}"],
               "receiver": [f"--storage.tsdb.path={folder / 'tsdb'}", "--web.enable-remote-write-receiver"],
               "server": [f"--storage.tsdb.path={folder / 'tsdb'}"]}[mode]
    process = subprocess.Popen(
        ["prometheus", f"--config.file={folder / 'prometheus.yml'}", *storage, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=open(folder / "prometheus.log", "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: http_ok(f"{url}/-/ready") or process.poll() is not None, 60, "Prometheus to be ready")
        assert process.poll() is None, (folder / "prometheus.log").read_text()[-2000:]
        yield url
    finally:
        stop(process)
