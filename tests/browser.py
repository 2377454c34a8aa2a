"""Headless Chromium (Debian's package) for tests of what a person sees in a web UI: the page's
DOM after its scripts ran, and a screenshot to open as an image."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

# Without the background-networking flags Chromium tries Google's hosts at every start, which this
# machine's closed network refuses; --no-sandbox because tests may run as root.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage"]


def executable() -> str | None:
    return shutil.which("chromium")


def _run(args: list[str], timeout: float, width: int = 1400) -> subprocess.CompletedProcess:
    """Chromium with a fresh profile; on a timeout its whole process group goes (renderers too)."""
    with tempfile.TemporaryDirectory(prefix="edgewave-chromium-") as profile:
        process = subprocess.Popen([executable(), *FLAGS, f"--window-size={width},1000", f"--user-data-dir={profile}", *args],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def page(url: str, screenshot: Path, expect: list[str], attempts: int = 3, width: int = 1400) -> str:
    """The DOM of `url` once it shows every string of `expect` (a single-page app fills itself in
    from its API: a longer virtual-time budget each attempt), and its screenshot at `screenshot`
    in a window `width` pixels wide (1366: a laptop's screen)."""
    dom = ""
    for attempt in range(attempts):
        budget = 10_000 * (attempt + 1)
        dom = _run([f"--virtual-time-budget={budget}", "--dump-dom", url], timeout=90, width=width).stdout
        if all(text in dom for text in expect):
            break
    shot = _run([f"--virtual-time-budget={10_000 * attempts}", f"--screenshot={screenshot}", url], timeout=90,
                width=width)
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, f"no screenshot of {url}: {shot.stderr[-2000:]}"
    return dom
