"""`make up` / `make down`: a real Prefect server, MLflow server and process worker on 127.0.0.1.

State stays under EDGEWAVE_HOME (the same SQLite databases the embedded mode uses, so runs of
`make run` show up in both UIs). `up` is idempotent: what already runs (by recorded pid and
health check) is left alone; deployments and the work pool are (re)applied each time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgewave.tasks import CHECKOUT
from edgewave.tasks.platform import processes
from edgewave.tasks.platform.settings import Settings

WORK_POOL = "edgewave-process"
ROOT = CHECKOUT


@dataclass(frozen=True)
class Servers:
    prefect_url: str
    mlflow_url: str
    worker_pid: int | None
    prometheus_url: str | None = None  # the central Prometheus, when EDGEWAVE_CENTRAL_PROMETHEUS is on

    @property
    def prefect_api(self) -> str:
        return f"{self.prefect_url}/api"


def _bin(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def _record(settings: Settings, name: str) -> Path:
    return settings.home / "servers" / f"{name}.json"


def _log(settings: Settings, name: str) -> Path:
    return settings.home / "servers" / f"{name}.log"


MARKERS = {"prefect": ("prefect", "server"), "mlflow": ("mlflow", "server"), "worker": ("prefect", "worker"),
           "prometheus": ("prometheus", "--web.enable-remote-write-receiver"),
           "prometheus-agent": ("prometheus", "--enable-feature=agent")}


def _wait(what: str, check: Callable[[], bool], process: subprocess.Popen | None, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}; its log: {log}\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not healthy after {timeout:.0f}s; its log: {log}\n{_tail(log)}")
        time.sleep(0.5)


def _tail(log: Path, lines: int = 15) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


# MLflow 3's server starts a job runner with a dozen huey consumer processes by default (each one
# importing all of MLflow) for GenAI scoring jobs edgewave never submits. Off, a start takes 18.8 s
# and 18 s of CPU instead of 34.4 s and 72 s (quiet machine, measured once each).
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true"}


def mlflow_server_command(port: int, database: Path, artifacts: Path) -> list[str]:
    """A real `mlflow server` (one worker) on 127.0.0.1 with its SQLite database and artifact
    folder; run it with MLFLOW_SERVER_ENV in its environment."""
    return [_bin("mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
            "--backend-store-uri", f"sqlite:///{database}", "--artifacts-destination", str(artifacts)]


def server_env(settings: Settings, prefect_api: str, mlflow_url: str) -> dict[str, str]:
    """What every process of the stack (and every flow run the worker starts) runs with."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "EDGEWAVE_HOME": str(settings.home), "EDGEWAVE_TRACKING_URI": mlflow_url,
        "PREFECT_HOME": str(settings.home / "prefect"), "PREFECT_API_URL": prefect_api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
    })
    return env


HEALTH = {"mlflow": "/health", "prefect": "/api/health", "prometheus": "/-/ready", "prometheus-agent": "/-/ready"}


def links(settings: Settings) -> dict[str, str]:
    """The UIs of the servers `up` started that answer now: name → URL (what status shows)."""
    found = {}
    for name, health in HEALTH.items():
        if name == "prometheus-agent":  # no UI a person opens
            continue
        record = _record(settings, name)
        try:
            url = json.loads(record.read_text()).get("url")
        except (OSError, ValueError):
            continue
        if url and processes.running_pid(record, MARKERS[name]) is not None and processes.http_ok(url + health):
            found[name] = url
    return found


def _ensure(settings: Settings, name: str, command: list[str], url: str, env: dict[str, str],
            timeout: float, log: Callable[[str], None]) -> None:
    record, health = _record(settings, name), url + HEALTH[name]
    if processes.running_pid(record, MARKERS[name]) is not None and processes.http_ok(health):
        log(f"{name}: already running (pid {processes.running_pid(record, MARKERS[name])})")
        return
    if processes.http_ok(health):
        raise RuntimeError(f"{name}: something else already answers at {health}; stop it or pick another port")
    processes.stop(record, MARKERS[name])
    process = processes.start(command, record, _log(settings, name), env, cwd=ROOT, url=url)
    log(f"{name}: starting (pid {process.pid}, log {_log(settings, name)})")
    _wait(name, lambda: processes.http_ok(health), process, _log(settings, name), timeout)


def _prefect(args: list[str], env: dict[str, str]) -> str:
    # prefect.yaml's pull step is `{{ $PWD }}`: the checkout the worker runs flows from
    result = subprocess.run([_bin("prefect"), *args], env={**env, "PWD": str(ROOT)}, cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"`prefect {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result.stdout


def start_metrics(settings: Settings, port: int = 9090, agent_port: int | None = None,
                  log: Callable[[str], None] = print, timeout: float = 60.0) -> str:
    """The fleet's metrics path on this machine, as a plant wires it: a Prometheus agent scraping
    the local fleet's sites and remote-writing to a central Prometheus (receiver on, the fleet's
    alert rules loaded). Configs under EDGEWAVE_HOME/prometheus; returns the central URL."""
    import yaml

    from edgewave.tasks.platform.fleetfile import load_fleet_file
    from edgewave.tasks.rollout.prometheus import agent_config, alert_rules_yaml

    fleet_file = load_fleet_file(settings.fleet_path)
    folder = settings.home / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "alerts.yml").write_text(alert_rules_yaml(fleet_file))
    (folder / "central.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
        "rule_files": [str(folder / "alerts.yml")]}, sort_keys=False))
    url, agent_port = f"http://127.0.0.1:{port}", agent_port or port + 1
    (folder / "agent.yml").write_text(yaml.safe_dump(
        agent_config(fleet_file.fleet, f"{url}/api/v1/write", 1.0, plant="local"), sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGEWAVE_")}
    _ensure(settings, "prometheus", [
        "prometheus", f"--config.file={folder / 'central.yml'}", f"--storage.tsdb.path={folder / 'central'}",
        "--web.enable-remote-write-receiver", f"--web.listen-address=127.0.0.1:{port}"], url, env, timeout, log)
    _ensure(settings, "prometheus-agent", [
        "prometheus", "--enable-feature=agent", f"--config.file={folder / 'agent.yml'}",
        f"--storage.agent.path={folder / 'agent'}", f"--web.listen-address=127.0.0.1:{agent_port}"],
        f"http://127.0.0.1:{agent_port}", env, timeout, log)
    return url


def start_prefect(settings: Settings, port: int, env: dict[str, str], scheduler: bool = True,
                  log: Callable[[str], None] = print, timeout: float = 120.0) -> str:
    """Start (or find) a Prefect server with its UI on 127.0.0.1:port, its database under
    EDGEWAVE_HOME/prefect (`env` from server_env); returns its API URL. `scheduler=False`: a
    server that creates no scheduled runs."""
    url = f"http://127.0.0.1:{port}"
    quiet = {} if scheduler else {"PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false"}
    _ensure(settings, "prefect", [_bin("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            url, {**env, **quiet}, timeout, log)
    return f"{url}/api"


def up(settings: Settings, prefect_port: int = 4200, mlflow_port: int = 5050, deployments: list[str] | None = None,
       scheduler: bool = True, extra_env: dict[str, str] | None = None, log: Callable[[str], None] = print,
       timeout: float = 120.0, prometheus_port: int = 9090) -> Servers:
    """Start (or find) the servers, deploy prefect.yaml to the process pool, start the worker.

    `deployments` limits which deployments are applied (all by default); `scheduler=False`
    starts a server that creates no scheduled runs (tests that want only their own runs);
    `extra_env` reaches the worker and so every flow run (EDGEWAVE_FLEET_PATH, say).
    """
    prefect_url, mlflow_url = f"http://127.0.0.1:{prefect_port}", f"http://127.0.0.1:{mlflow_port}"
    env = {**server_env(settings, f"{prefect_url}/api", mlflow_url), **(extra_env or {})}
    settings.home.mkdir(parents=True, exist_ok=True)
    prometheus = start_metrics(settings, prometheus_port, log=log) if settings.central_prometheus else None
    if prometheus:  # every flow run reads rollout telemetry from the central Prometheus
        env["EDGEWAVE_PROMETHEUS_URL"] = prometheus
    _ensure(settings, "mlflow", mlflow_server_command(mlflow_port, settings.home / "mlflow.db",
                                                      settings.home / "mlartifacts-server"),
            mlflow_url, {**env, **MLFLOW_SERVER_ENV}, timeout, log)
    start_prefect(settings, prefect_port, env, scheduler, log, timeout)
    _prefect(["work-pool", "create", WORK_POOL, "--type", "process", "--overwrite"], env)
    names = [arg for name in deployments for arg in ("--name", name)] if deployments else ["--all"]
    _prefect(["--no-prompt", "deploy", *names], env)
    log(f"deployed {', '.join(deployments) if deployments else 'every deployment'} of prefect.yaml to {WORK_POOL}")
    worker = _record(settings, "worker")
    pid = processes.running_pid(worker, MARKERS["worker"])
    if pid is None:
        pid = processes.start([_bin("prefect"), "worker", "start", "--pool", WORK_POOL, "--name", "edgewave-local"],
                              worker, _log(settings, "worker"), env, cwd=ROOT).pid
        log(f"worker: started (pid {pid}, log {_log(settings, 'worker')})")
    return Servers(prefect_url, mlflow_url, pid, prometheus)


def down(settings: Settings) -> list[str]:
    """Stop the worker, then the servers, each by its recorded pid."""
    return [name for name in ("worker", "prefect", "mlflow", "prometheus-agent", "prometheus")
            if processes.stop(_record(settings, name), MARKERS[name])]
