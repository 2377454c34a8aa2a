"""The serving image of a model version: build context, build, push, digest.

The context holds everything the Dockerfile needs, so the build itself never touches the
network: a wheelhouse of `edgewave[edge]` (prepared here with `pip wheel`, reused while
pyproject.toml is unchanged), the trusted public keys and the signed bundle. The image is
tagged `<registry>/edgewave-serving:<model>-v<version>`; what rollouts use is the pushed
digest, recorded on the model version.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from edgewave.serving.bundle import parse_public_keys
from edgewave.tasks import CHECKOUT

ROOT = CHECKOUT
DOCKERFILE = ROOT / "deployments" / "Dockerfile"
REPOSITORY = "edgewave-serving"
PIP_FOR_IMAGE = "pip==24.3.1"  # runs from its wheel inside the build; the base needs no pip


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    image_id: str
    size_bytes: int
    build_seconds: float
    digest_ref: str | None = None  # <registry>/edgewave-serving@sha256:… once pushed


def image_tag(registry: str, model: str, version: int) -> str:
    return f"{registry}/{REPOSITORY}:{model}-v{version}"


def wheelhouse(cache: Path) -> Path:
    """Wheels of edgewave[edge] and pip, rebuilt only when pyproject.toml or the code changes
    (third-party wheels come from pip's own cache after the first time)."""
    sources = sorted(p for package in ("flows", "tasks", "serving") for p in (ROOT / package).rglob("*.py"))
    key = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()
                         + b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    folder = cache / f"wheelhouse-{key}"
    if folder.exists():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    partial = cache / f".wheelhouse-{key}-{time.time_ns()}"
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(partial), f"{ROOT}[edge]",
               PIP_FOR_IMAGE]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise RuntimeError(f"preparing the wheelhouse failed: {result.stderr[-2000:]}")
    try:
        partial.rename(folder)
    except OSError:  # another release made the same wheelhouse meanwhile: the same key, the same wheels
        shutil.rmtree(partial, ignore_errors=True)
        if not folder.exists():
            raise
    for old in sorted(cache.glob("wheelhouse-*"), key=lambda p: p.stat().st_mtime)[:-2]:  # ~100 MB each
        shutil.rmtree(old, ignore_errors=True)
    return folder


def wheel_cache() -> Path:
    """Shared by every EDGEWAVE_HOME of this user: the wheels depend on the code, not the state."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgewave"


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def build_context(out: Path, wheels: Path, public_keys: str, bundle: Path | None) -> Path:
    """A self-contained build context: Dockerfile, wheelhouse, the public keys (PEM text) sites trust, bundle."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(DOCKERFILE, out / "Dockerfile")
    shutil.copytree(wheels, out / "wheelhouse", copy_function=_link_or_copy)  # ~100 MB: share, don't copy
    if not parse_public_keys(public_keys):
        raise ValueError("no public key given for the image: its sites could not verify any bundle")
    (out / "keys").mkdir()
    (out / "keys" / "trusted.pub").write_text(public_keys)
    (out / "bundle").mkdir()
    if bundle is not None:
        for item in bundle.iterdir():
            shutil.copy(item, out / "bundle" / item.name)
    return out


def build(docker_host: str, context: Path, tag: str, base_image: str, model: str | None = None,
          version: int | None = None, sha256: str | None = None, target: str = "model",
          nocache: bool = False) -> BuiltImage:
    """Build with the Docker SDK against `docker_host` (the legacy builder, no network)."""
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=600)
    try:
        started = time.perf_counter()
        image, _ = client.images.build(
            path=str(context), tag=tag, target=target, network_mode="none", rm=True, forcerm=True, nocache=nocache,
            buildargs={"BASE_IMAGE": base_image, "BUILD_IMAGE": f"{base_image}-build", "MODEL_NAME": model or "",
                       "MODEL_VERSION": str(version or ""),
                       "MODEL_SHA256": sha256 or ""})
        seconds = time.perf_counter() - started
        return BuiltImage(tag, str(image.id), int(image.attrs["Size"]), seconds)
    finally:
        client.close()


def push(docker_host: str, built: BuiltImage) -> BuiltImage:
    """Push the tag; returns the image with its `<repo>@sha256:…` reference from the registry."""
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=600)
    try:
        repository, tag = built.tag.rsplit(":", 1)
        digest = None
        for line in client.images.push(repository, tag=tag, stream=True, decode=True):
            if "error" in line:
                raise RuntimeError(f"push of {built.tag} failed: {line['error']}")
            digest = line.get("aux", {}).get("Digest", digest)
        if digest is None:
            raise RuntimeError(f"push of {built.tag} reported no digest")
        return BuiltImage(built.tag, built.image_id, built.size_bytes, built.build_seconds, f"{repository}@{digest}")
    finally:
        client.close()


@dataclass(frozen=True)
class ImageOutcome:
    status: str  # "pushed" | "skipped"
    reason: str
    context: str
    tag: str
    digest_ref: str | None = None
    size_bytes: int | None = None
    build_seconds: float | None = None


def release_image(docker_host: str | None, registry: str, base_image: str, work: Path, public_keys: str,
                  bundle: Path, model: str, version: int, sha256: str) -> ImageOutcome:
    """Write the build context; with a reachable engine build and push it, else say why not."""
    from edgewave.tasks.platform.engine import reachable

    tag = image_tag(registry, model, version)
    try:
        wheels = wheelhouse(wheel_cache())
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return ImageOutcome("skipped", f"the wheelhouse could not be prepared: {exc}", "", tag)
    context = build_context(work / f"{model}-v{version}" / "context", wheels, public_keys, bundle)
    if not docker_host or not reachable(docker_host):
        why = "no Docker engine configured (EDGEWAVE_DOCKER_HOST / DOCKER_HOST)" if not docker_host else \
            f"the Docker engine at {docker_host} does not answer"
        return ImageOutcome("skipped", f"{why}; build context written to {context}", str(context), tag)
    built = push(docker_host, build(docker_host, context, tag, base_image, model, version, sha256))
    return ImageOutcome("pushed", f"built in {built.build_seconds:.1f}s and pushed", str(context), tag,
                        built.digest_ref, built.size_bytes, built.build_seconds)
