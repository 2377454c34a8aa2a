"""Long-running local processes (site servers, Prefect and MLflow servers, a worker) that a
command starts and another command stops: by the pid recorded in a JSON file, never by name.

Each process gets its own session (process group), so stopping it stops its children too
(uvicorn workers, flow-run subprocesses). A recorded pid is only trusted while its command
line still holds the marker words it was started with: pids get recycled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path


def alive(pid: int, markers: tuple[str, ...]) -> bool:
    """The pid runs and its command line contains every marker."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return all(any(marker.encode() in part for part in cmdline) for marker in markers)


def running_pid(record: Path, markers: tuple[str, ...]) -> int | None:
    """The pid in `record` if that process still runs."""
    if not record.exists():
        return None
    pid = json.loads(record.read_text())["pid"]
    return pid if alive(pid, markers) else None


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """`url` answers 200: how a started server is known to be up."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def start(command: list[str], record: Path, log: Path, env: dict[str, str], cwd: Path | None = None,
          **details: object) -> subprocess.Popen:
    """Start `command` detached in its own session, output to `log`, pid (and details) to `record`."""
    record.parent.mkdir(parents=True, exist_ok=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as output:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=cwd,
                                   start_new_session=True)
    record.write_text(json.dumps({"pid": process.pid, "started": time.time(), "command": command, **details}))
    return process


def stop(record: Path, markers: tuple[str, ...], timeout: float = 15.0) -> bool:
    """SIGTERM the recorded process group, SIGKILL after `timeout`; forget the record. True if it ran."""
    pid = running_pid(record, markers)
    if pid is not None:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(pid, markers) and time.monotonic() < deadline:
            time.sleep(0.1)
        if alive(pid, markers):
            os.killpg(pid, signal.SIGKILL)
    record.unlink(missing_ok=True)
    return pid is not None
