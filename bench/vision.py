"""Benchmark: the defect-detection model at a site, side by side on the same model and images.

- a site (`edgewave serve --bundle`, fp32 and int8) against (a) the in-process ceiling: Pillow
  decode + ONNX Runtime in a loop, one thread as the site runs it, and (b) the FastAPI + Pillow +
  ONNX Runtime service a user would write (bench/plain_vision_app.py); single PNG images, wrk at
  8 connections (and 1), images/s and p50/p99; the site's RSS under that load;
- fp32 against int8 (static, calibrated on training images): in-process images/s, model size,
  test PR-AUC;
- the CNN against the plain baseline (statistics + thumbnail into a logistic regression): test
  PR-AUC on several seeds of generated parts.

Results go to bench/results/vision.json.

    .venv/bin/python -m bench.vision [--seconds 8] [--seeds 3] [--images 2400]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from bench.common import write_results
from bench.serving import ensure_wrk, parse_wrk, rss_mb, start
from edgewave.serving.model import site_session
from tests.helpers import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "vision.json"
BIN = Path(sys.executable).parent
CLASSES = ("good", "scratch", "pit", "crack", "stain")
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "{content_type}"
local f = io.open("{body}", "rb")
wrk.body = f:read("*a")
f:close()
"""


def load(wrk: str, url: str, body: Path, content_type: str, connections: int, seconds: int) -> dict[str, float]:
    script = body.with_suffix(".lua")
    script.write_text(LUA.format(body=body, content_type=content_type))
    threads = min(connections, 2)
    subprocess.run([wrk, f"-t{threads}", f"-c{connections}", "-d2s", "-s", str(script), url],
                   capture_output=True, check=True)  # warm-up
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def split_for(seed: int, images: int):
    from edgewave.tasks.data.images import ImageSet
    from edgewave.tasks.data.surfaces import generate
    from edgewave.tasks.release import vision

    pixels, labels = generate(images, seed)
    return vision.split_images(ImageSet(pixels, np.array([CLASSES.index(c) for c in labels]), (), CLASSES))


def in_process(model: bytes, png: bytes, seconds: float, threads: int = 1) -> dict[str, float]:
    """Decode + one ORT call per image in a loop: what no server can beat on the same threads."""
    from PIL import Image

    sess = site_session(model, threads)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        pixels = np.asarray(Image.open(io.BytesIO(png)), dtype=np.uint8)[None, :, :, None]
        sess.run(["probabilities", "embedding"], {"image": pixels})
        times.append(time.perf_counter() - t0)
    arr = np.array(times)
    return {"images_per_s": len(arr) / arr.sum(), "p50_ms": float(np.percentile(arr, 50) * 1e3),
            "p99_ms": float(np.percentile(arr, 99) * 1e3)}


def quality(seeds: int, images: int, epochs: int) -> list[dict]:
    from edgewave.tasks.release import vision

    rows = []
    for seed in range(1, seeds + 1):
        split = split_for(100 + seed, images)
        t0 = time.perf_counter()
        cnn = vision.train_cnn(split, seed, epochs=epochs)
        t1 = time.perf_counter()
        baseline = vision.train_baseline(split, seed)
        t2 = time.perf_counter()
        rows.append({"seed": 100 + seed, "cnn_test_pr_auc": round(cnn.metrics.pr_auc, 4),
                     "baseline_test_pr_auc": round(baseline.metrics.pr_auc, 4),
                     "cnn_validation_pr_auc": round(cnn.validation_pr_auc, 4),
                     "baseline_validation_pr_auc": round(baseline.validation_pr_auc, 4),
                     "cnn_train_s": round(t1 - t0, 1), "baseline_train_s": round(t2 - t1, 1),
                     "test_images": len(split.y_test), "test_defective": int(split.defective(split.y_test).sum())})
        print(f"seed {100 + seed}: CNN {rows[-1]['cnn_test_pr_auc']:.3f} ({rows[-1]['cnn_train_s']} s) vs baseline "
              f"{rows[-1]['baseline_test_pr_auc']:.3f} ({rows[-1]['baseline_train_s']} s)", flush=True)
    return rows


def bundle(work: Path, model: bytes, int8: bytes | None, split, trained, name: str) -> Path:
    from edgewave.tasks.data.images import ImageLimits, ImageShape
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release import vision
    from edgewave.tasks.release.bundle import build_image_manifest, load_or_create_signing_key, write_bundle

    manifest = build_image_manifest(
        name="surface-defects", version=1, family="cnn", model=model, int8_model=int8,
        shape=ImageShape(width=64, height=64, channels=1), limits=ImageLimits(), classes=CLASSES,
        threshold=trained.metrics.threshold, metrics=trained.metrics.as_dict(), data_fingerprint=split.data_fingerprint,
        parity_max_abs_diff=0.0, reference=vision.image_reference(model, split.x_train, 200))
    return write_bundle(work / name, manifest, model, int8, load_or_create_signing_key(Settings(home=work).signing_key))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--images", type=int, default=2400)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    from PIL import Image

    from edgewave.tasks.release import vision
    from edgewave.tasks.release.train import evaluate

    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="edgewave-bench-vision-"))
    results: dict = {"quality": quality(args.seeds, args.images, args.epochs)}

    split = split_for(7, args.images)
    trained = vision.train_cnn(split, 0, epochs=args.epochs)
    exported = vision.export_image_model(trained, split, quantization_max_delta=1.0)  # measured here, kept regardless
    fp32, int8 = exported.model, exported.quantized.model
    assert int8 is not None
    y = split.defective(split.y_test)
    png_buffer = io.BytesIO()
    Image.fromarray(split.x_test[0][:, :, 0]).save(png_buffer, "PNG")
    png = work / "part.png"
    png.write_bytes(png_buffer.getvalue())

    variants = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        probabilities, _ = vision.onnx_predict(site_session(model), split.x_test)
        variants[name] = {"model_bytes": len(model), "test_pr_auc": round(evaluate(y, 1 - probabilities[:, 0], 0.5).pr_auc, 4),
                          "in_process": in_process(model, png.read_bytes(), 4.0)}
        print(f"{name}: {variants[name]['in_process']['images_per_s']:.0f} images/s in process, "
              f"{len(model) / 1024:.0f} kB, test PR-AUC {variants[name]['test_pr_auc']:.4f}", flush=True)
    results["variants"] = variants
    variants["fp32"]["in_process_2_threads"] = in_process(fp32, png.read_bytes(), 4.0, threads=2)
    print(f"fp32 on 2 threads: {variants['fp32']['in_process_2_threads']['images_per_s']:.0f} images/s in process",
          flush=True)

    (work / "fp32.onnx").write_bytes(fp32)
    (work / "int8.onnx").write_bytes(int8)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}", "EDGEWAVE_HOME": str(work),
           "EDGEWAVE_TRUSTED_KEYS_DIR": str(work / "keys"), "EDGEWAVE_SAMPLE_FRACTION": "0.1",
           "PYTHONPATH": str(ROOT)}
    servers: dict[str, dict] = {}
    plans = {
        "edgewave_fp32": lambda port: ([str(BIN / "edgewave"), "serve", "--bundle",
                                        str(bundle(work, fp32, None, split, trained, "bundle-fp32")), "--port", str(port)],
                                       {}, "/readyz", "/v1/predict"),
        "edgewave_int8": lambda port: ([str(BIN / "edgewave"), "serve", "--bundle",
                                        str(bundle(work, int8, None, split, trained, "bundle-int8")), "--port", str(port)],
                                       {}, "/readyz", "/v1/predict"),
        "edgewave_fp32_2_threads": lambda port: ([str(BIN / "edgewave"), "serve", "--bundle",
                                                  str(work / "bundle-fp32"), "--port", str(port)],
                                                 {"EDGEWAVE_INFERENCE_THREADS": "2"}, "/readyz", "/v1/predict"),
        "plain_fastapi": lambda port: ([str(BIN / "uvicorn"), "bench.plain_vision_app:app", "--host", "127.0.0.1",
                                        "--port", str(port), "--log-level", "warning"],
                                       {"EDGEWAVE_BENCH_MODEL": str(work / "fp32.onnx")}, "/health", "/predict"),
    }
    for name, plan in plans.items():
        port = free_port()
        cmd, extra, ready, path = plan(port)
        process, startup = start(cmd, {**env, **extra}, work / f"{name}.log", f"http://127.0.0.1:{port}{ready}", 120)
        entry: dict = {"start_to_ready_s": round(startup, 3), "runs": {}}
        try:
            for connections in (1, 8):
                run = load(wrk, f"http://127.0.0.1:{port}{path}", png, "image/png", connections, args.seconds)
                entry["runs"][f"conns={connections}"] = run
                print(f"{name:14} conns={connections}: {run['requests_per_s']:7.0f} images/s  p50 {run['p50_ms']:6.2f} ms"
                      f"  p99 {run['p99_ms']:6.2f} ms  non-2xx {run['non_2xx']}", flush=True)
            entry.update(rss_mb(process.pid))
        finally:
            stop(process)
        servers[name] = entry
    results["servers"] = servers

    site = servers["edgewave_fp32"]["runs"]["conns=8"]["requests_per_s"]
    plain = servers["plain_fastapi"]["runs"]["conns=8"]["requests_per_s"]
    ceiling = variants["fp32"]["in_process"]["images_per_s"]
    int8_speed = variants["int8"]["in_process"]["images_per_s"] / variants["fp32"]["in_process"]["images_per_s"]
    pr_auc_drop = variants["fp32"]["test_pr_auc"] - variants["int8"]["test_pr_auc"]
    results["ratios"] = {"site_vs_in_process_ceiling": round(site / ceiling, 3), "site_vs_plain_fastapi": round(site / plain, 2),
                         "int8_vs_fp32_in_process": round(int8_speed, 2),
                         "int8_site_vs_fp32_site": round(servers["edgewave_int8"]["runs"]["conns=8"]["requests_per_s"] / site, 2),
                         "two_threads_site_vs_one": round(
                             servers["edgewave_fp32_2_threads"]["runs"]["conns=8"]["requests_per_s"] / site, 2),
                         "two_threads_site_vs_two_threads_ceiling": round(
                             servers["edgewave_fp32_2_threads"]["runs"]["conns=8"]["requests_per_s"]
                             / variants["fp32"]["in_process_2_threads"]["images_per_s"], 3),
                         "int8_pr_auc_drop": round(pr_auc_drop, 4)}
    results["targets"] = {
        "site >= 70% of the in-process ceiling (8 connections)": site >= 0.7 * ceiling,
        "site >= 3x the plain FastAPI service (8 connections)": site >= 3 * plain,
        "int8 >= 1.3x fp32 in process": int8_speed >= 1.3,
        "int8 PR-AUC drop <= 0.01": pr_auc_drop <= 0.01,
        "CNN ahead of the baseline on every seed": all(r["cnn_test_pr_auc"] > r["baseline_test_pr_auc"]
                                                      for r in results["quality"]),
        "site RSS under load <= 300 MB": servers["edgewave_fp32"]["peak_rss_mb"] <= 300,
    }
    results.update({"benchmark": "visual inspection at the site: edgewave vs in-process ceiling vs plain FastAPI; "
                                 "fp32 vs int8; CNN vs baseline",
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "images": args.images, "epochs": args.epochs, "seconds_per_run": args.seconds,
                    "load_generator": "wrk, one 64x64 grayscale PNG per request"})
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
