"""A traffic replayer: sensor rows sent to each site at a set rate.

Rows come from a source that follows the dataset spec. With a simulated machine (the spec's
`generator:`) each site gets its own seeded stream, optionally through one of that machine's
drift scenarios (which can change while it runs), so canary and baseline sites see comparable
(or deliberately different) traffic, and every row has the outcome its physics gave it. A
plant's own data set has no simulator: the replayer then samples the model bundle's training
reference, the rows the model was trained on, and has no outcomes to report. Rows are drawn at
random from the stream, so any short window is a fair sample of that site's distribution.

With a feedback store, each site also reports what happened to the machines it scored: the
rows it sent with their true outcome, as a maintenance log would, which retraining uses.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from edgewave.tasks.data.ai4i import DriftScenario
from edgewave.tasks.data.machines import simulate
from edgewave.tasks.data.spec import DatasetSpec, load_spec
from edgewave.tasks.platform.fleetfile import Site
from edgewave.tasks.platform.monitoring import MonitoringStore

STREAM_ROWS = 5000


@dataclass(frozen=True)
class Simulated:
    """Rows of the spec's simulated machine, through a drift scenario: outcomes follow its physics."""

    spec: DatasetSpec
    can_drift = True

    @property
    def features(self) -> tuple[str, ...]:
        return self.spec.features

    @property
    def target(self) -> str | None:
        return self.spec.target.name

    def rows(self, seed: int, scenario: DriftScenario | None) -> pd.DataFrame:
        return simulate(self.spec, STREAM_ROWS, seed, scenario)


@dataclass(frozen=True)
class ReferenceRows:
    """A bundle's training reference: the raw rows a model version was trained on, without outcomes."""

    frame: pd.DataFrame
    features: tuple[str, ...]
    target = None
    can_drift = False

    def rows(self, seed: int, scenario: DriftScenario | None) -> pd.DataFrame:
        return self.frame


RowSource = Simulated | ReferenceRows


def source_for(settings, version: int | None = None) -> RowSource:
    """The spec's simulated machine if it names one, else the reference rows of model `version`
    (default: the version in production) fetched from the bundle store and verified."""
    spec = load_spec(settings.dataset)
    if spec.generator is not None:
        return Simulated(spec)
    from edgewave.tasks.drift.reference import reference_for
    from edgewave.tasks.release.registry import PRODUCTION, alias_version

    version = version or alias_version(settings, PRODUCTION)
    if version is None:
        raise ValueError(f"{settings.dataset}: the dataset {spec.name!r} has no simulated machine, so traffic samples "
                         f"a bundle's reference rows, and {settings.model_name} has no version in production yet")
    reference = reference_for(settings, settings.model_name, version)
    return ReferenceRows(reference.frame[list(reference.features)], reference.features)


class Traffic:
    def __init__(self, sites: list[Site], source: RowSource, rate_per_site: float = 20.0, rows_per_request: int = 1,
                 scenarios: dict[str, DriftScenario] | None = None, seed: int = 0,
                 feedback_store: MonitoringStore | None = None, feedback_seconds: float = 10.0) -> None:
        if feedback_store is not None and source.target is None:
            raise ValueError("feedback needs the true outcome of every row sent, and these rows "
                             f"({type(source).__name__}) have none; run without a feedback store")
        self.sites = sites
        self.source = source
        for scenario in (scenarios or {}).values():
            self._check(scenario)
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
            self.scenarios[site_id] = self._check(scenario)
        self._generation += 1

    def _check(self, scenario: DriftScenario) -> DriftScenario:
        """A source that cannot drift says so here, in the caller, not in a traffic thread."""
        if not self.source.can_drift:
            raise ValueError(f"drift scenario {scenario.name!r}: {type(self.source).__name__} rows cannot drift; "
                             "scenarios need a dataset spec with a simulated machine (generator:)")
        return scenario

    def _stream(self, index: int, site: Site) -> pd.DataFrame:
        return self.source.rows(self.seed + index + 1000 * self._generation, self.scenarios.get(site.id))

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
            batch = frame[list(self.source.features)].iloc[picks].to_dict("records")
            try:
                conn = conn or http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=5)
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
        if self.feedback_store is None:
            return
        try:
            self.feedback_store.write_feedback(site.id, frame.loc[rows, [*self.source.features, self.source.target]])
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
