"""A traffic replayer: sensor rows sent to each site at a set rate.

Rows come from a source that follows the dataset spec. With a simulated machine (the spec's
`generator:`) each site gets its own seeded stream, optionally through one of that machine's
drift scenarios (which can change while it runs), so canary and baseline sites see comparable
(or deliberately different) traffic, and every row has the outcome its physics gave it. A
plant's own data set has no simulator: the replayer then samples the model bundle's training
reference, the rows the model was trained on, and has no outcomes to report. Rows are drawn at
random from the stream, so any short window is a fair sample of that site's distribution, and
without replacement (`Picks`): no row is sent twice before the stream has been sent whole.

With a feedback store, each site also reports what happened to the machines it scored: the
rows it sent with their true outcome, as a maintenance log would, which retraining uses.

A camera line (a spec of kind images) sends images instead: generated parts (tasks/data/
surfaces.py), one PNG per request or a JSON batch of them, through the line's scenarios
(lighting, defocus, a moved camera, a new defect type).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlparse

import numpy as np
import pandas as pd

from edgewave.tasks.data.ai4i import DriftScenario
from edgewave.tasks.data.images import ImageSpec
from edgewave.tasks.data.machines import machine_of, simulate
from edgewave.tasks.data.spec import DatasetSpec, load_any_spec
from edgewave.tasks.platform.fleetfile import Site
from edgewave.tasks.platform.monitoring import MonitoringStore

STREAM_ROWS = 5000
# A camera never sees the same part twice, and the embedding drift check notices when it does: its
# classifier learns the repeated parts in one half of its split and finds them in the other. 400
# parts sent 1,500 times read as ROC AUC 0.55-0.59 on a healthy camera (0.60 in one demo run: a
# healthy site flagged), 1,500 distinct parts 0.49-0.52. 2,000 distinct parts cover the rows a
# demo's check reads (~1,500 at 20 requests/s) without a repeat; they take 1.2 s to make.
STREAM_IMAGES = 2000


class Picks:
    """Positions in a stream of `size` in a shuffled order, each once before any comes again."""

    def __init__(self, size: int, rng: np.random.Generator) -> None:
        self.size, self.rng = size, rng
        self.order, self.cursor = rng.permutation(size), 0

    def take(self, count: int) -> np.ndarray:
        taken = []
        while count > 0:
            if self.cursor == self.size:
                self.order, self.cursor = self.rng.permutation(self.size), 0
            part = self.order[self.cursor:self.cursor + count]
            taken.append(part)
            self.cursor += len(part)
            count -= len(part)
        return np.concatenate(taken)


@dataclass(frozen=True)
class RowStream:
    """One site's rows: a request body of some of them, and what really happened to them."""

    frame: pd.DataFrame
    features: tuple[str, ...]
    target: str | None

    def __len__(self) -> int:
        return len(self.frame)

    def body(self, picks: np.ndarray) -> tuple[bytes, str]:
        batch = self.frame[list(self.features)].iloc[picks].to_dict("records")
        return json.dumps({"instances": batch}).encode(), "application/json"

    def outcomes(self, picks: list[int]) -> pd.DataFrame:
        """The picked rows (by position) with their true outcome: a maintenance log's entries."""
        return self.frame.iloc[picks][[*self.features, *([self.target] if self.target else [])]]


@dataclass(frozen=True)
class ImageStream:
    """One camera's parts, encoded as PNG files: one per request, or a JSON batch of base64."""

    pngs: tuple[bytes, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.pngs)

    def body(self, picks: np.ndarray) -> tuple[bytes, str]:
        if len(picks) == 1:
            return self.pngs[int(picks[0])], "image/png"
        return json.dumps({"images": [base64.b64encode(self.pngs[int(i)]).decode() for i in picks]}).encode(), \
            "application/json"

    def outcomes(self, picks: list[int]) -> pd.DataFrame:
        """The picked parts as an inspector labelled them: the image files and their class."""
        return pd.DataFrame({"image": [self.pngs[i] for i in picks], "label": [self.labels[i] for i in picks]})


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

    def stream(self, seed: int, scenario: DriftScenario | None) -> RowStream:
        return RowStream(self.rows(seed, scenario), self.features, self.target)

    def demo_changes(self) -> list[DriftScenario]:
        """The two changes of the world the demo's drifting sites go through (the machine names them)."""
        machine = machine_of(self.spec)
        return [machine.scenario(name, **params) for name, params in machine.demo_drift]


@dataclass(frozen=True)
class ReferenceRows:
    """A bundle's training reference: the raw rows a model version was trained on, without outcomes."""

    frame: pd.DataFrame
    features: tuple[str, ...]
    target = None
    can_drift = False

    def rows(self, seed: int, scenario: DriftScenario | None) -> pd.DataFrame:
        return self.frame

    def stream(self, seed: int, scenario: DriftScenario | None) -> RowStream:
        return RowStream(self.frame, self.features, None)


@dataclass(frozen=True)
class Parts:
    """Generated parts of an image spec's camera line, through a scenario of tasks/data/surfaces.py."""

    spec: ImageSpec
    target = "label"  # an inspector's verdict on each part sent: labelled images for retraining
    can_drift = True

    def stream(self, seed: int, scenario: DriftScenario | None) -> ImageStream:
        from PIL import Image

        from edgewave.tasks.data.surfaces import generate

        shape = self.spec.image
        images, labels = generate(STREAM_IMAGES, seed, size=(shape.height, shape.width),
                                  scenario=scenario.name if scenario else "none", defects=self.spec.defect_classes)
        encoded = []
        for pixels in images:
            buffer = io.BytesIO()
            Image.fromarray(pixels[:, :, 0]).convert(shape.mode).save(buffer, "PNG")
            encoded.append(buffer.getvalue())
        return ImageStream(tuple(encoded), tuple(labels))

    def demo_changes(self) -> list[DriftScenario]:
        """The demo's two drifting cameras: a replaced lamp and a lens out of focus."""
        return [self.scenario("lighting"), self.scenario("defocus")]

    def scenario(self, name: str) -> DriftScenario:
        """A scenario of the camera line by name (`lighting`, `defocus`, `shifted`, `new_defect`)."""
        from edgewave.tasks.data.surfaces import SCENARIOS

        if name not in SCENARIOS or name == "none":
            raise ValueError(f"no image scenario {name!r}; known: {sorted(set(SCENARIOS) - {'none'})}")
        return DriftScenario(name, SCENARIOS[name].description)


RowSource = Simulated | ReferenceRows | Parts


def source_for(settings, version: int | None = None) -> RowSource:
    """The spec's simulated machine if it names one, else the reference rows of model `version`
    (default: the version in production) fetched from the bundle store and verified."""
    spec = load_any_spec(settings.dataset)
    if isinstance(spec, ImageSpec):
        if spec.generator is None:
            raise ValueError(f"{settings.dataset}: the image dataset {spec.name!r} has no generator: traffic needs one")
        return Parts(spec)
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
        self._generations: Counter = Counter()  # per site: bumped by its scenario changes
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def set_scenario(self, site_id: str, scenario: DriftScenario | None) -> None:
        """From now on the site sees the world through `scenario` (None: back to normal)."""
        if scenario is None:
            self.scenarios.pop(site_id, None)
        else:
            self.scenarios[site_id] = self._check(scenario)
        self._generations[site_id] += 1

    def _check(self, scenario: DriftScenario) -> DriftScenario:
        """A source that cannot drift says so here, in the caller, not in a traffic thread."""
        if not self.source.can_drift:
            raise ValueError(f"drift scenario {scenario.name!r}: {type(self.source).__name__} rows cannot drift; "
                             "scenarios need a dataset spec with a simulated machine (generator:)")
        return scenario

    def _stream(self, index: int, site: Site) -> RowStream | ImageStream:
        return self.source.stream(self.seed + index + 1000 * self._generations[site.id], self.scenarios.get(site.id))

    def _run(self, index: int, site: Site, stream: RowStream | ImageStream, generation: int) -> None:
        rng = np.random.default_rng(self.seed + index)
        picker = Picks(len(stream), rng)
        url = urlparse(site.base_url)
        conn: http.client.HTTPConnection | None = None
        answered: list[int] = []
        last_feedback = time.monotonic()
        while not self._stop.is_set():
            started = time.monotonic()
            if generation != self._generations[site.id]:  # its scenario changed: report rows of the old stream first
                if answered:
                    self._report(site, stream, answered)
                    answered = []
                generation, stream = self._generations[site.id], self._stream(index, site)
                picker = Picks(len(stream), rng)
            picks = picker.take(self.rows_per_request)
            body, content_type = stream.body(picks)
            try:
                conn = conn or http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port, timeout=5)
                conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": content_type})
                response = conn.getresponse()
                response.read()
                self.statuses[site.id][response.status] += 1
                if response.status == 200 and self.feedback_store:
                    answered.extend(int(i) for i in picks)
            except (OSError, http.client.HTTPException):
                self.statuses[site.id]["unreachable"] += 1
                if conn is not None:
                    conn.close()
                conn = None
            if answered and time.monotonic() - last_feedback >= self.feedback_seconds:
                self._report(site, stream, answered)
                answered, last_feedback = [], time.monotonic()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
        if answered:
            self._report(site, stream, answered)
        if conn is not None:
            conn.close()

    def _report(self, site: Site, stream: RowStream | ImageStream, rows: list[int]) -> None:
        """The maintenance log of the scored machines: inputs and what really happened."""
        if self.feedback_store is None:
            return
        try:
            self.feedback_store.write_feedback(site.id, stream.outcomes(rows))
            self.feedback_rows[site.id] += len(rows)
        except OSError as exc:  # a full disk or an unmounted store must not stop the traffic
            self.statuses[site.id][f"feedback failed: {exc}"] += 1

    def start(self) -> Traffic:
        """Every site's stream is made before any is sent: made in the sending threads, a camera line's
        2,000 parts a site held all traffic back for seconds (a demo's canary got no request to judge)."""
        self._threads = [threading.Thread(target=self._run, args=(i, s, self._stream(i, s), self._generations[s.id]),
                                          name=f"traffic-{s.id}", daemon=True)
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
