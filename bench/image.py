"""Benchmark: the serving image on a real local Docker engine: size, full build time, and the
rebuild time when only the model changed (the layer order should make it the last layer only).

Both builds run in this one script against the same engine and base image: the full build
with the layer cache off, then a build of the next model version with the cache on. The ratio
is rebuild / full build.

    .venv/bin/python -m bench.image
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "image.json"
BASE_IMAGE = "edgewave-base:bookworm-py311"
STATE = Path(tempfile.gettempdir()) / f"edgewave-bench-docker-{os.getuid()}"


def bundles(home: Path) -> tuple[Path, Path, str]:
    """Two signed versions of a small model (v1, v2) and the public key (PEM) that verifies them."""
    from edgewave.tasks.data.ai4i import generate
    from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, public_pem, write_bundle
    from edgewave.tasks.release.export import export_model
    from edgewave.tasks.release.train import split_data, train_sklearn

    key = load_or_create_signing_key(home / "keys" / "signing.key")
    out = []
    for version in (1, 2):
        split = split_data(generate(6000, version), 0)
        trained = train_sklearn(split)
        exported = export_model(trained, split.x_test, split.y_test)
        manifest = build_manifest(
            name="machine-failure", version=version, family="sklearn", model=exported.model, int8_model=None,
            train_frame=split.train_frame, threshold=trained.metrics.threshold, metrics=trained.metrics.as_dict(),
            data_fingerprint=split.data_fingerprint, parity_max_abs_diff=exported.parity_max_abs_diff,
            reference_rows=5000)
        out.append(write_bundle(home / "bundles" / f"v{version}", manifest, exported.model, None, key))
    return out[0], out[1], public_pem(key)


def main() -> None:
    from edgewave.tasks.platform import engine as engines
    from edgewave.tasks.release import image as images
    from tests.helpers import free_port

    engine = engines.start(STATE, registry_port=free_port())
    try:
        t = time.perf_counter()
        subprocess.run([str(ROOT / "scripts" / "build-base-image.sh"), BASE_IMAGE], check=True,
                       env={**os.environ, "DOCKER_HOST": engine.docker_host})
        base_s = time.perf_counter() - t
        with tempfile.TemporaryDirectory(prefix="edgewave-bench-image-") as tmp:
            v1, v2, keys = bundles(Path(tmp))
            t = time.perf_counter()
            wheels = images.wheelhouse(STATE / "wheels")
            wheelhouse_s = time.perf_counter() - t

            import docker

            client = docker.DockerClient(base_url=engine.docker_host)
            full = images.build(engine.docker_host, images.build_context(Path(tmp) / "ctx1", wheels, keys, v1),
                                images.image_tag(engine.registry, "machine-failure", 1), BASE_IMAGE,
                                "machine-failure", 1, nocache=True)
            rebuild = images.build(engine.docker_host, images.build_context(Path(tmp) / "ctx2", wheels, keys, v2),
                                   images.image_tag(engine.registry, "machine-failure", 2), BASE_IMAGE,
                                   "machine-failure", 2)
            t = time.perf_counter()
            pushed = images.push(engine.docker_host, rebuild)
            push_s = time.perf_counter() - t
            history_v1 = [layer["Id"] for layer in client.api.history(full.tag)]
            history_v2 = [layer["Id"] for layer in client.api.history(rebuild.tag)]
            shared = len(set(history_v1) & set(history_v2) - {"<missing>"})
            client.close()
    finally:
        engines.stop(STATE)
    result = {
        "benchmark": "image", "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "system": platform.platform()},
        "image_size_mb": round(full.size_bytes / 1e6, 1), "target_size_mb": 350,
        "size_target_met": full.size_bytes / 1e6 < 350,
        "base_image": BASE_IMAGE, "base_image_build_s (0 when reused)": round(base_s, 2),
        "wheelhouse_s (cached when pyproject unchanged)": round(wheelhouse_s, 2),
        "full_build_no_cache_s": round(full.build_seconds, 2),
        "rebuild_model_only_s": round(rebuild.build_seconds, 2), "target_rebuild_s": 10,
        "ratio_rebuild_over_full": round(rebuild.build_seconds / full.build_seconds, 3),
        "rebuild_target_met": rebuild.build_seconds < 10,
        "push_s": round(push_s, 2), "pushed": pushed.digest_ref,
        "layers_shared_v1_v2": shared,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
