"""A local fleet: site processes of the serving runtime on loopback ports, by pid.

`up` starts one `edgewave serve --site` per site of the fleet file (own state dir under
EDGEWAVE_HOME/sites/<id>, own port) and records its pid; `down` stops exactly those pids;
`status` reads each site's /readyz and the desired state it was given.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from edgewave.tasks.platform import processes
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.bundle import trusted_public_keys
from edgewave.tasks.rollout.gitops import DesiredStateRepo, HistoryRewritten
from edgewave.tasks.rollout.policy import Fleet, Site


@dataclass(frozen=True)
class SiteStatus:
    site: str
    port: int | None
    pid: int | None
    running: bool
    ready: bool
    version: int | None
    desired: int | None


def _pid_file(settings: Settings, site: str) -> Path:
    return settings.home / "fleet" / f"{site}.json"


def _markers(site: str) -> tuple[str, ...]:
    return ("serve", site)


def _ready(site: Site) -> tuple[bool, int | None]:
    try:
        with urllib.request.urlopen(f"{site.base_url}/readyz", timeout=2) as response:
            return True, json.loads(response.read())["model_version"]
    except OSError:
        return False, None


def _healthy(site: Site) -> bool:
    return processes.http_ok(f"{site.base_url}/healthz")


def up(settings: Settings, fleet: Fleet, count: int | None = None, extra_env: dict[str, str] | None = None,
       timeout: float = 30.0) -> list[SiteStatus]:
    """Start the first `count` local sites (all by default); already running ones are left alone."""
    sites = [s for s in fleet.sites if s.kind == "local"][: count or None]
    DesiredStateRepo.of(settings).ensure()  # agents clone it: it must have a first commit
    if settings.monitoring_store.startswith("file://"):  # the local store is ours to make; a bucket is not
        Path(settings.monitoring_store.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
    executable = shutil.which("edgewave", path=str(Path(sys.executable).parent)) or "edgewave"
    keys = trusted_public_keys(settings)  # given to each site: it never reads the signer's key folder
    started: list[tuple[Site, subprocess.Popen]] = []
    for site in sites:
        record = _pid_file(settings, site.id)
        if processes.running_pid(record, _markers(site.id)) is not None:
            continue
        env = {**os.environ, "EDGEWAVE_HOME": str(settings.home), "EDGEWAVE_TRUSTED_PUBLIC_KEYS": keys,
               **(extra_env or {})}
        process = processes.start([executable, "serve", "--site", site.id, "--port", str(site.port)], record,
                                  settings.home / "fleet" / f"{site.id}.log", env, port=site.port)
        started.append((site, process))
    deadline = time.monotonic() + timeout
    for site, process in started:
        while not _healthy(site):
            if process.poll() is not None:
                raise RuntimeError(f"site {site.id} exited with {process.returncode}; see "
                                   f"{settings.home / 'fleet' / (site.id + '.log')}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"site {site.id} not listening on port {site.port} after {timeout:.0f}s")
            time.sleep(0.1)
    return status(settings, fleet)


def down(settings: Settings, fleet: Fleet, timeout: float = 15.0) -> list[str]:
    """Stop every site this home started, by its recorded pid; returns the stopped site ids."""
    return [site.id for site in fleet.sites
            if processes.stop(_pid_file(settings, site.id), _markers(site.id), timeout)]


def desired_versions(settings: Settings, site_ids: list[str]) -> dict[str, int]:
    """Each site's desired version as the remote says now (or as last seen, when it cannot be reached)."""
    repo = DesiredStateRepo.of(settings)
    if not (repo.path / ".git").exists():
        return {}
    try:
        repo.sync()
    except (ConnectionError, HistoryRewritten):
        pass  # show what the controller's clone last saw
    states = {site: repo.read(site) for site in site_ids}
    return {site: state.version for site, state in states.items() if state is not None}


def status(settings: Settings, fleet: Fleet) -> list[SiteStatus]:
    desired = desired_versions(settings, [s.id for s in fleet.sites])
    result = []
    for site in fleet.sites:
        record = _pid_file(settings, site.id)
        pid = json.loads(record.read_text())["pid"] if record.exists() else None
        running = processes.running_pid(record, _markers(site.id)) is not None
        ready, version = _ready(site)
        result.append(SiteStatus(site.id, site.port, pid, running, ready, version, desired.get(site.id)))
    return result
