"""A traffic replayer: generated sensor rows sent to each site at a set rate.

Each site gets its own thread and its own seeded stream, optionally through a drift scenario
(which can change while it runs), so canary and baseline sites see comparable (or
deliberately different) traffic. Rows are drawn at random from the site's generated day of
production, so any short window is a fair sample of that site's distribution.

With a feedback store, each site also reports what happened to the machines it scored: the
rows it sent with their true outcome, as a maintenance log would, which retraining uses.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from edgewave.tasks.drift.store import MonitoringStore
from edgewave.tasks.release.data import FEATURES, TARGET, DriftScenario, generate
from edgewave.tasks.rollout.policy import Site


class Traffic:
    def __init__(self, sites: list[Site], rate_per_site: float = 20.0, rows_per_request: int = 1,
                 scenarios: dict[str, DriftScenario] | None = None, seed: int = 0,
                 feedback_store: MonitoringStore | None = None, feedback_seconds: float = 10.0) -> None:
        self.sites = sites
        self.interval = 1.0 / rate_per_site
        self.rows_per_request = rows_per_request
        self.scenarios = dict(scenarios or {})
        self.seed = seed
        self.feedback_store = feedback_store
        self.feedback_seconds = feedback_seconds
        self.statuses: dict[str, Counter] = {s.id: Counter() for s in sites}
        self.feedback_rows: Counter = Counter()
        self._generation = 0
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def set_scenario(self, site_id: str, scenario: DriftScenario | None) -> None:
        """From now on the site sees the world through `scenario` (None: back to normal)."""
        if scenario is None:
            self.scenarios.pop(site_id, None)
        else:
            self.scenarios[site_id] = scenario
        self._generation += 1

    def _stream(self, index: int, site: Site) -> pd.DataFrame:
        return generate(5000, self.seed + index + 1000 * self._generation, self.scenarios.get(site.id))

    def _run(self, index: int, site: Site) -> None:
        generation, frame = self._generation, self._stream(index, site)
        rng = np.random.default_rng(self.seed + index)
        url = urlparse(site.base_url)
        conn: http.client.HTTPConnection | None = None
        answered: list[int] = []
        last_feedback = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            if generation != self._generation:  # the scenario changed: report rows of the old stream first
                if answered:
                    self._report(site, frame, answered)
                    answered = []
                generation, frame = self._generation, self._stream(index, site)
            picks = rng.integers(0, len(frame), self.rows_per_request)
            batch = frame[list(FEATURES)].iloc[picks].to_dict("records")
            try:
                conn = conn or http.client.HTTPConnection(url.hostname, url.port, timeout=5)
                conn.request("POST", "/v1/predict", body=json.dumps({"instances": batch}),
                             headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                self.statuses[site.id][response.status] += 1
                if response.status == 200 and self.feedback_store:
                    answered.extend(frame.index[picks])
            except (OSError, http.client.HTTPException):
                self.statuses[site.id]["unreachable"] += 1
                if conn is not None:
                    conn.close()
                conn = None
            if answered and time.monotonic() - last_feedback >= self.feedback_seconds:
                self._report(site, frame, answered)
                answered, last_feedback = [], time.monotonic()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if answered:
            self._report(site, frame, answered)
        if conn is not None:
            conn.close()

    def _report(self, site: Site, frame: pd.DataFrame, rows: list[int]) -> None:
        """The maintenance log of the scored machines: inputs and what really happened."""
        try:
            self.feedback_store.write_feedback(site.id, frame.loc[rows, [*FEATURES, TARGET]])
            self.feedback_rows[site.id] += len(rows)
        except OSError as exc:  # a full disk or an unmounted store must not stop the traffic
            self.statuses[site.id][f"feedback failed: {exc}"] += 1

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
