"""Helpers for tests that start real processes: free ports, bounded waits, stop by pid."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.25) -> None:
    """Poll `predicate` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


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
    state.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    return subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{state / 'mlflow.db'}",
         "--artifacts-destination", str(state / "artifacts")],
        stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )


def edgewave_env(home: Path, **extra: str) -> dict[str, str]:
    """Environment for an `edgewave` subprocess whose state is all under `home`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EDGEWAVE_", "PREFECT_", "MLFLOW_"))}
    env.update({"EDGEWAVE_HOME": str(home), "EDGEWAVE_TRAIN_ROWS": "4000", **extra})
    return env
