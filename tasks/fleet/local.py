"""A local fleet: the fleet file's local sites on loopback ports, as processes or as containers.

`up` starts one site per local site of the fleet file: an `edgewave serve --site` process
(state under EDGEWAVE_HOME/sites/<id>; the embedded default), or with `containers=True` a
container of the serving image that shares only the network with the control plane (see
tasks/platform/containers.py). Either way it records what it started in
EDGEWAVE_HOME/fleet/<site>.json; `down` stops exactly those (pid or container id); `status`
reads each site's /readyz and the desired state it was given; `logs` shows what a site said.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgewave.serving.redact import redact
from edgewave.serving.settings import EdgeSettings
from edgewave.tasks.fleet import containers
from edgewave.tasks.platform import processes
from edgewave.tasks.platform.fleetfile import Fleet, Site
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.gitops import DesiredStateRepo, HistoryRewritten
from edgewave.tasks.rollout.telemetry import wrong_site


@dataclass(frozen=True)
class SiteStatus:
    site: str
    port: int | None
    pid: int | None
    running: bool
    ready: bool
    version: int | None
    desired: int | None
    container: str | None = None  # short id, for a container site
    problem: str | None = None  # what answers on its address is not this site (`wrong_site`)


def _record(settings: Settings, site: str) -> Path:
    return settings.home / "fleet" / f"{site}.json"


def _started(settings: Settings, site: str) -> dict | None:
    record = _record(settings, site)
    return json.loads(record.read_text()) if record.exists() else None


def _markers(site: str) -> tuple[str, ...]:
    return ("serve", site)


def _answer(site: Site, route: str, fleet: str) -> tuple[dict | None, str | None]:
    """The site's answer on `route` (None when nothing answers 2xx), and why the endpoint is not
    the site of this fleet (None when it is)."""
    url = f"{site.base_url}{route}"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            body = json.loads(response.read())
    except (OSError, ValueError):
        return None, None
    if not isinstance(body, dict):
        body = {}
    return body, wrong_site(body.get("site"), body.get("fleet"), site, fleet, url)


def _ready(site: Site, fleet: str) -> tuple[bool, int | None, str | None]:
    body, problem = _answer(site, "/readyz", fleet)
    if body is None or problem:
        return False, None, problem
    return True, body.get("model_version"), None


def _running(settings: Settings, site: str) -> bool:
    started = _started(settings, site)
    if started is None:
        return False
    if started.get("kind") == "container":
        try:
            found = containers.state(settings, started["container"])
        except containers.ContainerSiteError:  # the engine is gone: so is the container
            return False
        return bool(found and found.running)
    return processes.running_pid(_record(settings, site), _markers(site)) is not None


def up(settings: Settings, fleet: Fleet, count: int | None = None, extra_env: dict[str, str] | None = None,
       timeout: float = 60.0, in_containers: bool = False, image: str | None = None) -> list[SiteStatus]:
    """Start the first `count` local sites (all by default); already running ones are left alone."""
    sites = [s for s in fleet.sites if s.kind == "local"][: count or None]
    if in_containers:
        containers.check_network_only(settings)
        if image is None:
            raise containers.ContainerSiteError("container sites need the serving image (no release has one yet: "
                                                "release with a Docker engine reachable, or pass --image)")
    DesiredStateRepo.of(settings).ensure()  # agents clone it: it must have a first commit
    if settings.monitoring_store.startswith("file://"):  # the local store is ours to make; a bucket is not
        Path(settings.monitoring_store.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    starting: list[tuple[Site, Callable[[], str | None]]] = []
    for site in sites:
        if _running(settings, site.id):
            continue
        if in_containers and image is not None:
            starting.append((site, _start_container(settings, site, image, extra_env)))
        else:
            starting.append((site, _start_process(settings, site, extra_env)))
    deadline = time.monotonic() + timeout
    fleet_id = settings.fleet_identity()
    for site, exited in starting:
        while True:
            answer, problem = _answer(site, "/healthz", fleet_id)
            if answer is not None and problem is None:
                break
            why = exited()
            if why:
                raise RuntimeError(f"site {site.id} {why}{f'; {problem}' if problem else ''}; "
                                   f"see `edgewave fleet logs {site.id}`")
            if time.monotonic() > deadline:
                raise TimeoutError(f"site {site.id} not listening on port {site.port} after {timeout:.0f}s; "
                                   f"see `edgewave fleet logs {site.id}`")
            time.sleep(0.2)
    return status(settings, fleet)


SYSTEM_VARIABLES = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
SECRET_SETTINGS = {"ssh_key", "ssh_key_path", "git_token", "git_token_file", "registry_password",
                   "registry_password_file"}


def process_environment(settings: Settings, site: Site, extra_env: dict[str, str] | None) -> dict[str, str]:
    """All a local site process is told: the system's basics, the edge's own settings that are no
    secret (EDGEWAVE_SYNC_INTERVAL_SECONDS, …) from this environment, and what a container site is
    told (remotes, trusted keys, fleet id, its own <site>.env). Never this process's credentials:
    the control plane's push-capable Git key, its store and registry accounts, AWS_* or MLflow's."""
    edge = {f"EDGEWAVE_{name.upper()}" for name in EdgeSettings.model_fields if name not in SECRET_SETTINGS}
    inherited = {k: v for k, v in os.environ.items() if k in SYSTEM_VARIABLES or k in edge}
    return {**inherited, **containers.environment(settings, site, extra_env), "EDGEWAVE_HOME": str(settings.home),
            "EDGEWAVE_SERVE_PORT": str(site.port)}


def _start_process(settings: Settings, site: Site, extra_env: dict[str, str] | None) -> Callable[[], str | None]:
    executable = shutil.which("edgewave", path=str(Path(sys.executable).parent)) or "edgewave"
    folder = settings.site_dir(site.id)
    folder.mkdir(parents=True, exist_ok=True)
    process: subprocess.Popen = processes.start(  # in its own folder: never reads the control plane's .env
        [executable, "serve", "--site", site.id, "--port", str(site.port)], _record(settings, site.id),
        _log(settings, site.id), process_environment(settings, site, extra_env), cwd=folder, port=site.port,
        kind="process")
    return lambda: f"exited with {process.returncode}" if process.poll() is not None else None


def _start_container(settings: Settings, site: Site, image: str,
                     extra_env: dict[str, str] | None) -> Callable[[], str | None]:
    container = containers.run(settings, site, image, extra_env)
    record = _record(settings, site.id)
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"kind": "container", "container": container, "image": image, "port": site.port,
                                  "started": time.time()}))

    def exited() -> str | None:
        found = containers.state(settings, container)
        return None if found and found.running else f"container stopped ({found.status if found else 'gone'})"
    return exited


def _log(settings: Settings, site: str) -> Path:
    return settings.home / "fleet" / f"{site}.log"


def down(settings: Settings, fleet: Fleet, timeout: float = 15.0) -> list[str]:
    """Stop every site this home started, by its recorded pid or container id; returns the stopped ids."""
    stopped = []
    for site in fleet.sites:
        started = _started(settings, site.id)
        if started and started.get("kind") == "container":
            if containers.stop(settings, started["container"], int(timeout)):
                stopped.append(site.id)
            _record(settings, site.id).unlink(missing_ok=True)
        elif processes.stop(_record(settings, site.id), _markers(site.id), timeout):
            stopped.append(site.id)
    return stopped


def logs(settings: Settings, site: str, lines: int = 200) -> str:
    """The last `lines` of what the site wrote (its process log, or its container's output), redacted."""
    started = _started(settings, site)
    if started and started.get("kind") == "container":
        return containers.logs(settings, started["container"], lines)
    log = _log(settings, site)
    if not log.exists():
        raise FileNotFoundError(f"no log of site {site} under {log.parent} (was it started by `edgewave fleet up`?)")
    return redact("\n".join(log.read_text(errors="replace").splitlines()[-lines:]))


def desired_versions(settings: Settings, site_ids: list[str]) -> dict[str, int]:
    """Each site's desired version as the remote says now (or as last seen, when it cannot be reached)."""
    repo = DesiredStateRepo.of(settings)
    if not (repo.path / ".git").exists():
        return {}
    with contextlib.suppress(ConnectionError, HistoryRewritten):  # else show what the clone last saw
        repo.sync()
    states = {site: repo.read(site) for site in site_ids}
    return {site: state.version for site, state in states.items() if state is not None}


def status(settings: Settings, fleet: Fleet) -> list[SiteStatus]:
    desired = desired_versions(settings, [s.id for s in fleet.sites])
    fleet_id = settings.fleet_identity()
    result = []
    for site in fleet.sites:
        started = _started(settings, site.id) or {}
        container = started.get("container") if started.get("kind") == "container" else None
        ready, version, problem = _ready(site, fleet_id)
        result.append(SiteStatus(site.id, site.port, started.get("pid"), _running(settings, site.id), ready, version,
                                 desired.get(site.id), container[:12] if container else None, problem))
    return result
