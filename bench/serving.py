"""Benchmark: edgewave's site vs `mlflow models serve`, a bare ASGI echo app and in-process
onnxruntime, on the same ONNX model, in one run.

Load comes from wrk (Debian's package; installed here if missing) on 127.0.0.1 only:
single-row and 100-row requests at 1 and 8 connections. Also measured: the site's start to
ready time and its resident memory after the load. Results go to bench/results/serving.json.

    .venv/bin/python -m bench.serving [--seconds 8]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "serving.json"
BIN = Path(sys.executable).parent

from bench.common import write_results
from edgewave.serving.bundle import BundleManifest
from tests.helpers import free_port, http_ok, stop, wait_for

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}"):read("*a")
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("installing wrk from Debian's packages ...", flush=True)
    if subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, capture_output=True)
    return shutil.which("wrk") or sys.exit("wrk did not install")


def parse_wrk(output: str) -> dict[str, float]:
    def seconds(text: str) -> float:
        value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
        return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]

    pct = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)$", output, re.M))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors:.*", output)
    return {"requests_per_s": rps, "p50_ms": seconds(pct["50"]) * 1e3, "p99_ms": seconds(pct["99"]) * 1e3,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(0) if errors else ""}


def load(wrk: str, url: str, body_file: Path, connections: int, seconds: int, work: Path) -> dict[str, float]:
    script = work / f"{body_file.stem}.lua"
    script.write_text(LUA.format(body=body_file))
    threads = min(connections, 2)
    subprocess.run([wrk, f"-t{threads}", f"-c{connections}", "-d2s", "-s", str(script), url],
                   capture_output=True, check=True)  # warm-up
    out = subprocess.run([wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def rss_mb(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    field = lambda name: int(re.search(rf"{name}:\s+(\d+) kB", status).group(1)) / 1024  # noqa: E731
    return {"rss_mb": round(field("VmRSS"), 1), "peak_rss_mb": round(field("VmHWM"), 1)}


def prepare_model(work: Path):
    """Train, export and sign a model, and register it in a local MLflow, as the release does."""
    from edgewave.tasks.data.ai4i import generate
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release import registry
    from edgewave.tasks.release.bundle import build_manifest, load_or_create_signing_key, write_bundle
    from edgewave.tasks.release.export import export_model
    from edgewave.tasks.release.train import split_data, train_sklearn

    settings = Settings(home=work / "home")
    settings.apply_runtime_environment()
    split = split_data(generate(10_000, 1), 0)
    trained = train_sklearn(split)
    exported = export_model(trained, split.x_test, split.y_test)
    manifest = build_manifest(name=settings.model_name, version=1, family="sklearn", model=exported.model,
                              int8_model=None, train_frame=split.train_frame, threshold=trained.metrics.threshold,
                              metrics=trained.metrics.as_dict(), data_fingerprint=split.data_fingerprint,
                              parity_max_abs_diff=exported.parity_max_abs_diff, reference_rows=1000)
    bundle = write_bundle(work / "bundle", manifest, exported.model, None,
                          load_or_create_signing_key(settings.signing_key))
    run_id = registry.log_training_run(settings, "bench", "sklearn", trained.params, trained.metrics.as_dict(),
                                       split.data_fingerprint, exported.parity_max_abs_diff)
    version = registry.register_candidate(settings, run_id, exported.model, {})
    return settings, split, exported.model, bundle, f"models:/{version.name}/{version.version}"


def start(cmd: list[str], env: dict[str, str], log: Path, ready_url: str, timeout: float) -> tuple[subprocess.Popen, float]:
    began = time.perf_counter()
    process = subprocess.Popen(cmd, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: http_ok(ready_url) or process.poll() is not None, timeout, f"{cmd[0]} to be ready", interval=0.02)
    if process.poll() is not None:
        raise RuntimeError(f"{cmd} exited: {log.read_text()[-2000:]}")
    return process, time.perf_counter() - began


def in_process(model: bytes, x: np.ndarray, seconds: float) -> dict[str, float]:
    """onnxruntime called directly, same session options as the site: the model's own cost."""
    from edgewave.serving.model import site_session

    session = site_session(model)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        session.run(["probabilities"], {"features": x})
        times.append(time.perf_counter() - t0)
    arr = np.array(times)
    return {"requests_per_s": len(arr) / arr.sum(), "p50_ms": float(np.percentile(arr, 50) * 1e3),
            "p99_ms": float(np.percentile(arr, 99) * 1e3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    args = parser.parse_args()
    wrk = ensure_wrk()
    work = Path(tempfile.mkdtemp(prefix="edgewave-bench-serving-"))
    settings, split, model, bundle, model_uri = prepare_model(work)
    features = BundleManifest.model_validate_json((bundle / "bundle.json").read_text()).input.names

    bodies: dict[str, dict[str, Path]] = {"edgewave": {}, "mlflow": {}, "echo": {}}
    for rows in (1, 100):
        x = split.x_test[:rows]
        instances = [dict(zip(features, map(float, r))) for r in x]
        for name, payload in (("edgewave", {"instances": instances}), ("echo", {"instances": instances}),
                              ("mlflow", {"inputs": x.astype(float).tolist()})):
            path = work / f"{name}-{rows}.json"
            path.write_text(json.dumps(payload))
            bodies[name][str(rows)] = path

    env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '')}",
           "EDGEWAVE_HOME": str(settings.home), "EDGEWAVE_SAMPLE_FRACTION": "0.1",
           "EDGEWAVE_TRUSTED_KEYS_DIR": str(settings.signing_key.parent),  # a site trusts only keys given to it
           "MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri, "MLFLOW_DISABLE_TELEMETRY": "true"}
    results: dict = {"servers": {}}
    ports = {name: free_port() for name in bodies}
    servers = {
        "edgewave": ([str(BIN / "edgewave"), "serve", "--bundle", str(bundle), "--port", str(ports["edgewave"])],
                     f"http://127.0.0.1:{ports['edgewave']}/readyz", "/v1/predict"),
        "mlflow": ([str(BIN / "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local", "-w", "1",
                    "-h", "127.0.0.1", "-p", str(ports["mlflow"])], f"http://127.0.0.1:{ports['mlflow']}/ping",
                   "/invocations"),
        "echo": ([str(BIN / "uvicorn"), "bench.echo_app:app", "--host", "127.0.0.1", "--port", str(ports["echo"]),
                  "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
                  "--no-proxy-headers", "--no-server-header", "--no-date-header"],  # as the site runs
                 f"http://127.0.0.1:{ports['echo']}/", "/"),
    }
    for name, (cmd, ready, path) in servers.items():
        process, startup = start(cmd, {**env, "PYTHONPATH": str(ROOT)}, work / f"{name}.log", ready, 120)
        entry = {"start_to_ready_s": round(startup, 3), "runs": {}}
        try:
            check = urllib.request.Request(f"http://127.0.0.1:{ports[name]}{path}", data=bodies[name]["1"].read_bytes(),
                                           headers={"Content-Type": "application/json"})
            entry["sample_response"] = urllib.request.urlopen(check, timeout=10).read().decode()[:200]
            for rows in ("1", "100"):
                for conns in (1, 8):
                    r = load(wrk, f"http://127.0.0.1:{ports[name]}{path}", bodies[name][rows], conns, args.seconds, work)
                    entry["runs"][f"rows={rows},conns={conns}"] = r
                    print(f"{name:9} rows={rows:>3} conns={conns}: {r['requests_per_s']:9.0f} req/s  "
                          f"p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  non-2xx {r['non_2xx']}", flush=True)
            entry.update(rss_mb(process.pid))
        finally:
            stop(process)
        results["servers"][name] = entry

    results["servers"]["onnxruntime_in_process"] = {"runs": {
        f"rows={rows},conns=1": in_process(model, split.x_test[:rows], 3.0) for rows in (1, 100)}}
    ew, ml, echo = (results["servers"][n]["runs"] for n in ("edgewave", "mlflow", "echo"))
    key1 = "rows=1,conns=8"
    results["ratios"] = {
        f"edgewave_vs_mlflow[{k}]": round(ew[k]["requests_per_s"] / ml[k]["requests_per_s"], 2) for k in ew
    } | {f"edgewave_vs_echo[{k}]": round(ew[k]["requests_per_s"] / echo[k]["requests_per_s"], 3) for k in ew}
    results["targets"] = {
        "throughput >= 8x mlflow at 8 connections (single row)": ew[key1]["requests_per_s"] >= 8 * ml[key1]["requests_per_s"],
        "throughput >= 50% of echo at 8 connections (single row)": ew[key1]["requests_per_s"] >= 0.5 * echo[key1]["requests_per_s"],
        "p99 <= 3 ms at 8 connections single row": ew[key1]["p99_ms"] <= 3.0,
        "site RSS < 150 MB": results["servers"]["edgewave"]["peak_rss_mb"] < 150,
        "start to ready < 2 s": results["servers"]["edgewave"]["start_to_ready_s"] < 2.0,
    }
    results.update({"benchmark": "edge serving: edgewave vs mlflow models serve vs bare ASGI vs in-process ORT",
                    "when": datetime.now(UTC).isoformat(timespec="seconds"),
                    "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                    "seconds_per_run": args.seconds, "load_generator": "wrk, 2 threads at 8 connections, 1 at 1"})
    write_results(RESULTS, results)


if __name__ == "__main__":
    main()
