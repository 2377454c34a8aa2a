"""Local sites as containers of the release's serving image: they share only the network.

Each site runs `edgewave-site --site <id>` in its own container: read-only root file system,
a named volume of its own for state (`edgewave-site-<id>` at /var/lib/edgewave), `/tmp` in
memory, `--network host` (the engine runs with `--bridge=none`). Nothing of EDGEWAVE_HOME or
the checkout is mounted: a site is configured only through its environment, which says where
the desired-state Git remote, the monitoring store and the registry are, which public keys to
trust, and, from its own `<site>.env` in EDGEWAVE_SITE_ENV_DIR, its credentials (its SSH key,
its store account), as a per-site Secret would on Kubernetes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from edgewave.serving.redact import redact
from edgewave.tasks.platform.fleetfile import Site
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.bundle import trusted_public_keys
from edgewave.tasks.rollout.gitops import is_local

STATE = "/var/lib/edgewave"
LABEL = "io.edgewave.site"


class ContainerSiteError(RuntimeError):
    """A container site cannot be started as configured; says which setting."""


@dataclass(frozen=True)
class ContainerState:
    id: str
    running: bool
    status: str


def docker_client(settings: Settings):
    import docker

    from edgewave.tasks.platform.engine import configured_host

    host = configured_host(settings)
    if not host:
        raise ContainerSiteError("no Docker engine configured: set EDGEWAVE_DOCKER_HOST (or DOCKER_HOST)")
    try:
        client = docker.DockerClient(base_url=host, timeout=120)
        client.ping()
    except Exception as exc:  # docker raises several types for a missing or dead engine
        raise ContainerSiteError(f"the Docker engine at {host} does not answer: {type(exc).__name__}") from None
    return client


def check_network_only(settings: Settings) -> None:
    """Refuse a configuration a container could only satisfy by reading the control plane's disk."""
    problems = []
    if is_local(settings.desired_state_url):
        problems.append(f"EDGEWAVE_DESIRED_STATE_REMOTE is a local path ({settings.desired_state_url}); "
                        "give a network URL (ssh://, https://)")
    if settings.monitoring_store.startswith("file:"):
        problems.append("EDGEWAVE_MONITORING_STORE_URL is a local folder; give a network store (sftp://, s3://)")
    if not settings.bundle_registry and settings.bundle_store.startswith("file:"):
        problems.append("bundles would travel through a local folder: set EDGEWAVE_BUNDLE_REGISTRY (OCI) or a "
                        "network EDGEWAVE_BUNDLE_STORE_URL")
    if problems:
        raise ContainerSiteError("container sites share only the network with the control plane: "
                                 + "; ".join(redact(p) for p in problems))


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines (values may be quoted and span lines inside double quotes), # comments."""
    env: dict[str, str] = {}
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise ContainerSiteError(f"{path}: line {i} is not KEY=value")
        if value.startswith('"'):
            while not (value.endswith('"') and len(value) > 1) and i < len(lines):
                value += "\n" + lines[i]
                i += 1
            value = value[1:-1]
        env[key.strip()] = value
    return env


def environment(settings: Settings, site: Site, extra_env: dict[str, str] | None = None) -> dict[str, str]:
    """Everything the site's container is told: where its remotes are, what to trust, its own secrets."""
    env = {
        "EDGEWAVE_HOME": STATE,
        "EDGEWAVE_SERVE_HOST": "127.0.0.1",
        "EDGEWAVE_SERVE_PORT": str(site.port),
        "EDGEWAVE_DESIRED_STATE_REMOTE": settings.desired_state_url,
        "EDGEWAVE_MONITORING_STORE_URL": settings.monitoring_store,
        "EDGEWAVE_TRUSTED_PUBLIC_KEYS": trusted_public_keys(settings),
        "EDGEWAVE_FLEET_ID": settings.fleet_identity(),  # stated by the site, checked by the controller
        **({"EDGEWAVE_DESIRED_STATE_HINT": settings.desired_state_hint} if settings.desired_state_hint else {}),
        **(extra_env or {}),
    }
    if settings.site_env_dir is not None:
        own = settings.site_env_dir / f"{site.id}.env"
        if own.exists():
            env.update(read_env_file(own))
    return env


def container_name(site_id: str) -> str:
    return f"edgewave-site-{site_id}"


def run(settings: Settings, site: Site, image: str, extra_env: dict[str, str] | None = None) -> str:
    """Start the site's container (replacing a stopped one of the same name); returns its id."""
    import docker.errors

    client = docker_client(settings)
    try:
        with contextlib.suppress(docker.errors.NotFound):
            client.containers.get(container_name(site.id)).remove(force=True)
        container = client.containers.run(
            image, command=["--site", site.id], name=container_name(site.id), detach=True,
            network_mode="host", read_only=True, tmpfs={"/tmp": "rw,size=64m"},
            volumes={container_name(site.id): {"bind": STATE, "mode": "rw"}},
            environment=environment(settings, site, extra_env),
            labels={LABEL: site.id, "io.edgewave.home": str(settings.home)})
        return str(container.id)
    except docker.errors.DockerException as exc:
        raise ContainerSiteError(redact(f"site {site.id}: the container did not start: {exc}")) from None
    finally:
        client.close()


@contextmanager
def _container(settings: Settings, container_id: str) -> Iterator:
    """The container by id (None when it is gone), with a client closed afterwards."""
    import docker.errors

    client = docker_client(settings)
    try:
        try:
            container = client.containers.get(container_id)
        except docker.errors.NotFound:
            container = None
        yield container
    finally:
        client.close()


def state(settings: Settings, container_id: str) -> ContainerState | None:
    with _container(settings, container_id) as container:
        return ContainerState(container.id, container.status == "running", container.status) if container else None


def stop(settings: Settings, container_id: str, timeout: int = 15) -> bool:
    """Stop and remove the container (its state volume stays, like the disk of an edge box)."""
    with _container(settings, container_id) as container:
        if container is None:
            return False
        container.stop(timeout=timeout)
        container.remove()
        return True


def logs(settings: Settings, container_id: str, tail: int = 200) -> str:
    with _container(settings, container_id) as container:
        if container is None:
            raise FileNotFoundError(f"container {container_id[:12]} is gone (see `edgewave fleet status`)")
        return redact(container.logs(tail=tail).decode(errors="replace"))
