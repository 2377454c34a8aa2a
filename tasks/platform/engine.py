"""A local Docker engine and OCI registry for image builds on this machine (tests, `make bench`).

dockerd is only ever started as `dockerd --iptables=false --ip6tables=false --bridge=none`
(started without them the engine rewrites the host firewall and makes a bridge on a private range), with its
data, socket and pid under a state folder; containers use `--network host` or `none`. The
registry is Debian's `docker-registry` (distribution) on 127.0.0.1. Both are stopped by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from edgewave.serving.errors import Actionable
from edgewave.tasks.platform import processes

DOCKERD = ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none"]  # the only way it is started
DOCKERD_MARKERS = (DOCKERD[0], "--bridge=none")
REGISTRY_MARKERS = ("docker-registry", "serve")


class EngineUnavailable(RuntimeError, Actionable):
    """No Docker engine can run here; the message says why."""


@dataclass(frozen=True)
class Engine:
    docker_host: str  # unix:///…/docker.sock
    registry: str  # 127.0.0.1:<port>


def configured_host(settings) -> str | None:
    """Where the release and container sites find the engine: EDGEWAVE_DOCKER_HOST, else DOCKER_HOST."""
    return settings.docker_host or os.environ.get("DOCKER_HOST")


def require(settings) -> str:
    """The configured engine's address once it answers; else EngineUnavailable saying what to set or start."""
    host = configured_host(settings)
    if host and reachable(host):
        return host
    where = f"at {host} answers" if host else "is configured (EDGEWAVE_DOCKER_HOST / DOCKER_HOST)"
    raise EngineUnavailable(f"EDGEWAVE_IMAGE_REQUIRED is set but no Docker engine {where}: start one "
                            "(README, \"The serving image\") or unset it")


def reachable(docker_host: str) -> bool:
    """The engine at `docker_host` answers a ping."""
    return _ping(docker_host)


def _ping(docker_host: str) -> bool:
    import docker

    try:
        client = docker.DockerClient(base_url=docker_host, timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # docker raises several types for a missing or dead socket
        return False


def start(state: Path, registry_port: int = 5000, timeout: float = 60.0) -> Engine:
    """Start (or find) the Docker engine and the registry under `state`; EngineUnavailable if impossible."""
    if shutil.which(DOCKERD[0]) is None:
        raise EngineUnavailable(f"{DOCKERD[0]} is not installed (scripts/setup-system.sh installs docker.io)")
    if os.geteuid() != 0:
        raise EngineUnavailable("the Docker engine needs root here (no rootless setup)")
    state.mkdir(parents=True, exist_ok=True)
    socket = state / "docker.sock"
    docker_host = f"unix://{socket}"
    record = state / "engine.json"
    if processes.running_pid(record, DOCKERD_MARKERS) is None or not _ping(docker_host):
        processes.stop(record, DOCKERD_MARKERS)
        process = processes.start(
            [*DOCKERD, f"--data-root={state / 'data'}", f"--exec-root={state / 'exec'}",
             f"--pidfile={state / 'engine.pid'}", f"--host={docker_host}"],
            record, state / "engine.log", dict(os.environ))
        deadline = time.monotonic() + timeout
        while not _ping(docker_host):
            if process.poll() is not None or time.monotonic() > deadline:
                processes.stop(record, DOCKERD_MARKERS)
                log = (state / "engine.log").read_text(errors="replace").splitlines()[-8:]
                raise EngineUnavailable("the Docker engine did not start: " + " | ".join(log))
            time.sleep(0.5)
    return Engine(docker_host, start_registry(state, registry_port, timeout))


def start_registry(state: Path, port: int = 5000, timeout: float = 60.0) -> str:
    """Start (or find) Debian's docker-registry on 127.0.0.1:`port`, data under `state`; returns host:port."""
    if shutil.which("docker-registry") is None:
        raise EngineUnavailable("docker-registry is not installed (scripts/setup-system.sh installs it)")
    state.mkdir(parents=True, exist_ok=True)
    registry = f"127.0.0.1:{port}"
    record = state / "registry.json"
    running = processes.running_pid(record, REGISTRY_MARKERS)
    if running is not None and json.loads(record.read_text()).get("port") != port:
        processes.stop(record, REGISTRY_MARKERS)  # the same state asked for on another port
        running = None
    if running is None:
        config = state / "registry.yml"
        config.write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: "
                          f"{state / 'registry'}\nhttp:\n  addr: {registry}\n")
        process = processes.start(["docker-registry", "serve", str(config)], record, state / "registry.log",
                                  dict(os.environ), port=port)
        deadline = time.monotonic() + timeout
        while not processes.http_ok(f"http://{registry}/v2/"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise EngineUnavailable(f"registry did not start on {registry}; see {state / 'registry.log'}")
            time.sleep(0.3)
    return registry


def stop_registry(state: Path) -> bool:
    return processes.stop(state / "registry.json", REGISTRY_MARKERS)


def stop(state: Path) -> list[str]:
    """Stop the registry and the Docker engine started under `state`, by pid."""
    stopped = []
    if stop_registry(state):
        stopped.append("registry")
    if processes.stop(state / "engine.json", DOCKERD_MARKERS, timeout=30):
        stopped.append("engine")
    netns = state / "exec" / "netns" / "default"  # the engine leaves its host-network namespace mounted
    if os.path.ismount(netns):
        subprocess.run(["umount", str(netns)], check=False, capture_output=True, timeout=30)
    return stopped
