"""A traffic replayer: generated sensor rows sent to each site at a set rate.

Each site gets its own thread and its own seeded stream, optionally through a drift scenario,
so canary and baseline sites see comparable (or deliberately different) traffic.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from urllib.parse import urlparse

from tasks.data import FEATURES, DriftScenario, generate
from tasks.policy import Site


class Traffic:
    def __init__(self, sites: list[Site], rate_per_site: float = 20.0, rows_per_request: int = 1,
                 scenarios: dict[str, DriftScenario] | None = None, seed: int = 0) -> None:
        self.sites = sites
        self.interval = 1.0 / rate_per_site
        self.rows_per_request = rows_per_request
        self.scenarios = scenarios or {}
        self.seed = seed
        self.statuses: dict[str, Counter] = {s.id: Counter() for s in sites}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def _run(self, index: int, site: Site) -> None:
        frame = generate(5000, self.seed + index, self.scenarios.get(site.id))
        rows = frame[list(FEATURES)].to_dict("records")
        url = urlparse(site.base_url)
        conn: http.client.HTTPConnection | None = None
        i = 0
        while not self._stop.is_set():
            started = time.monotonic()
            batch = rows[i % len(rows): i % len(rows) + self.rows_per_request]
            i += self.rows_per_request
            try:
                conn = conn or http.client.HTTPConnection(url.hostname, url.port, timeout=5)
                conn.request("POST", "/v1/predict", body=json.dumps({"instances": batch}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                self.statuses[site.id][response.status] += 1
            except (OSError, http.client.HTTPException):
                self.statuses[site.id]["unreachable"] += 1
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if conn is not None:
            conn.close()

    def start(self) -> Traffic:
        self._threads = [threading.Thread(target=self._run, args=(i, s), name=f"traffic-{s.id}", daemon=True)
                         for i, s in enumerate(self.sites)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> dict[str, Counter]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        return self.statuses

    def __enter__(self) -> Traffic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
