"""A site simulator for bench/rollout_scale.py: many sites behind one HTTP port.

Each simulated site serves /<site>/metrics in edgewave's exposition format with steady,
healthy traffic (counters grow with time) and reports the version its desired-state file on
the Git remote asks for, as a real agent would once it converged: the simulator keeps its own
clone of the remote and fetches it every 0.2 s. It is a simulator, not a site: no model runs.
Each states itself as its site of FLEET_ID (`edgewave_site_info`), as a real site started by
that fleet's control plane does.
Usage: python bench/sitesim.py GIT_REMOTE PORT FLEET_ID
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

START = time.time()
RATE = 50.0  # simulated requests per second per site
BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SHARE = (0.0, 0.2, 0.7, 0.95, 0.99, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)  # cumulative latency profile
CONFIDENCE = ((0.5, 0.0), (0.6, 0.0), (0.7, 0.01), (0.8, 0.03), (0.9, 0.1), (0.95, 0.45), (0.99, 0.9), (1.0, 1.0),
              ("+Inf", 1.0))  # cumulative share of max(p, 1-p) per bucket: mean about 0.95
_versions: dict[str, tuple[float, int]] = {}


def version(repo: Path, site: str) -> int:
    path = repo / "sites" / f"{site}.yaml"
    try:
        mtime = os.stat(path).st_mtime
    except FileNotFoundError:
        return 0
    cached = _versions.get(site)
    if cached is None or cached[0] != mtime:
        cached = (mtime, int(yaml.safe_load(path.read_text())["version"]))
        _versions[site] = cached
    return cached[1]


def exposition(v: int, site: str, fleet: str) -> bytes:
    n = (time.time() - START) * RATE  # fractional counts: rates stay exact over short windows
    lines = [f'edgewave_site_info{{site_id="{site}",fleet_id="{fleet}"}} 1', f"edgewave_model_version {v}", f'edgewave_requests_total{{route="/v1/predict",status="200"}} {n}']
    lines += [f'edgewave_request_duration_seconds_bucket{{route="/v1/predict",le="{b}"}} {n * s}'
              for b, s in zip(BUCKETS, SHARE)]
    lines += [f'edgewave_request_duration_seconds_bucket{{route="/v1/predict",le="+Inf"}} {n}',
              *(f'edgewave_prediction_confidence_bucket{{le="{b}"}} {n * s}' for b, s in CONFIDENCE),
              f"edgewave_prediction_confidence_sum {n * 0.95}", f"edgewave_prediction_confidence_count {n}",
              f"edgewave_predicted_rows_total {n}", f'edgewave_predictions_total{{label="failure"}} {n * 0.04}',
              f"edgewave_positive_predictions_total {n * 0.04}",
              f'edgewave_predictions_total{{label="ok"}} {n * 0.96}', "edgewave_agent_offline 0"]
    return ("\n".join(lines) + "\n").encode()


def follow(remote: str, checkout: Path, interval: float = 0.2) -> None:
    """Keep `checkout` at the remote's main branch (what every simulated agent fetches)."""
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=checkout, capture_output=True, timeout=60)

    while True:
        git("fetch", "--quiet", "origin", "main")
        git("reset", "--quiet", "--hard", "origin/main")
        time.sleep(interval)


def main() -> None:
    remote, port, fleet = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    repo = Path(tempfile.mkdtemp(prefix="edgewave-sitesim-")) / "desired-state"
    subprocess.run(["git", "clone", "--quiet", remote, str(repo)], check=True, capture_output=True, timeout=120)
    threading.Thread(target=follow, args=(remote, repo), daemon=True).start()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            parts = self.path.strip("/").split("/")
            if len(parts) != 2 or parts[1] != "metrics":
                self.send_error(404)
                return
            body = exposition(version(repo, parts[0]), parts[0], fleet)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    server.request_queue_size = 512
    print("ready", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
