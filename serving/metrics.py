"""Prometheus metrics of an edge site (service + agent), in their own registry.

Canary analysis reads these: error rate from `edgewave_requests_total`, latency from the
request histogram, confidence and predicted-failure rate from the prediction metrics, and the
running version from `edgewave_model_info`.

The per-request series are plain counters updated on the event loop and turned into
Prometheus families only when scraped: prometheus_client's own Counter/Histogram take a lock
and walk buckets on every observation, which measured ~15 µs per request on this path (a
quarter of the handler). Rare series (model, agent, sampler) use prometheus_client as is.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, disable_created_metrics, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class Buckets:
    """A histogram's raw counts: one slot per bucket plus +Inf, a sum and nothing else."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def add(self, counts: list[int], total: float) -> None:
        for i, n in enumerate(counts):
            self.counts[i] += n
        self.total += total

    def family(self, name: str, doc: str, labels: dict[str, str] | None = None,
               into: HistogramMetricFamily | None = None) -> HistogramMetricFamily:
        family = into or HistogramMetricFamily(name, doc, labels=list(labels or {}))
        cumulative, running = [], 0
        for bound, n in zip([*map(str, self.bounds), "+Inf"], self.counts, strict=True):
            running += n
            cumulative.append((bound, running))
        family.add_metric(list((labels or {}).values()), cumulative, self.total)
        return family


class HotPath(Collector):
    """Per-request series, written only by the event loop thread, read at scrape time."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.request_latency: dict[str, Buckets] = {}
        self.inference = Buckets(LATENCY_BUCKETS)
        self.confidence = Buckets(CONFIDENCE_BUCKETS)
        self.rows = 0
        self.positive = 0  # rows or images predicted positive: a failure, a defect
        self.predicted: dict[str, int] = {}
        self.out_of_range: dict[str, int] = {}

    def collect(self) -> Iterator:
        requests = CounterMetricFamily("edgewave_requests", "HTTP requests by route and status.",
                                       labels=["route", "status"])
        for (route, status), n in sorted(self.requests.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily("edgewave_request_duration_seconds", "Time from request to response.",
                                        labels=["route"])
        for route, buckets in sorted(self.request_latency.items()):
            buckets.family("", "", {"route": route}, into=latency)
        yield latency
        yield self.inference.family("edgewave_inference_duration_seconds", "ONNX Runtime time per call (one call scores a micro-batch of requests).")
        yield self.confidence.family("edgewave_prediction_confidence", "max(p, 1-p) per scored row.")
        yield CounterMetricFamily("edgewave_predicted_rows", "Rows scored.", value=self.rows)
        yield CounterMetricFamily("edgewave_positive_predictions", "Rows or images predicted positive (a failure, a "
                                  "defect): what the canary's predicted-positive rate is made of.", value=self.positive)
        yield self._by("edgewave_predictions", "Scored rows by predicted class.", "label", self.predicted)
        yield self._by("edgewave_out_of_range_values", "Values outside the training range.", "feature",
                       self.out_of_range)

    @staticmethod
    def _by(name: str, doc: str, label: str, values: dict[str, int]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=[label])
        for key, n in sorted(values.items()):
            family.add_metric([key], n)
        return family


class SiteMetrics:
    def __init__(self, site_id: str, fleet_id: str | None = None) -> None:
        disable_created_metrics()  # `_created` series double the scrape and nothing here reads them
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.site_id = site_id
        self.fleet_id = fleet_id
        self.hot = HotPath()
        r.register(self.hot)
        # Who answers: the control plane reads it with every scrape and refuses an endpoint that is
        # another site, or a site of another fleet. Labels `site_id`/`fleet_id`, not `site`: the
        # scrape config labels each target `site`, and Prometheus would rename a clashing label.
        Gauge("edgewave_site_info", "This site's id and the fleet it belongs to (value 1).", ["site_id", "fleet_id"],
              registry=r).labels(site_id, fleet_id or "").set(1)
        self.model_info = Gauge("edgewave_model_info", "The model being served (value 1).",
                                ["model", "version", "sha256"], registry=r)
        self.model_version = Gauge("edgewave_model_version", "Version being served (0: none).", registry=r)
        self.load_failures = Counter("edgewave_model_load_failures", "Bundles refused, by reason.", ["reason"],
                                     registry=r)
        self.swaps = Counter("edgewave_model_swaps", "Models switched in.", registry=r)
        self.samples_written = Counter("edgewave_samples_written", "Sampled rows written to window files.", registry=r)
        self.samples_dropped = Counter("edgewave_samples_dropped", "Sampled rows lost, by reason: memory (too "
                                       "many pending), buffer_full (EDGEWAVE_SAMPLE_BUFFER_MAX_BYTES), disk_space "
                                       "(the volume's free space), write_failed.", ["reason"], registry=r)
        self.agent_offline = Gauge("edgewave_agent_offline", "1 while the desired-state remote or the monitoring "
                                   "store is unreachable.", registry=r)
        self.agent_last_sync = Gauge("edgewave_agent_last_sync_timestamp_seconds", "Last successful sync.", registry=r)
        self.agent_desired_version = Gauge("edgewave_agent_desired_version", "Version the site's desired state "
                                           "names (an image-pinned pod serves its image's model meanwhile).",
                                           registry=r)
        self.agent_applied_version = Gauge("edgewave_agent_applied_version", "Version the agent last applied.",
                                           registry=r)
        self.agent_errors = Counter("edgewave_agent_errors", "Agent errors by kind.", ["kind"], registry=r)
        self.agent_syncs = Counter("edgewave_agent_syncs", "Desired-state syncs by what they cost: fetched (a Git "
                                   "fetch over the network) or unchanged (the change hint said nothing moved).",
                                   ["kind"], registry=r)
        self.windows_shipped = Counter("edgewave_agent_windows_shipped", "Sample windows uploaded.", registry=r)
        self.buffered_windows = Gauge("edgewave_agent_buffered_windows", "Sample windows waiting to ship.", registry=r)
        self.model_version.set(0)
        self.agent_offline.set(0)
        # series the fleet's alert rules take `increase()` of exist from the start, so the first
        # failure is an increase from 0 and not a new series Prometheus has no earlier sample of
        self.load_failures.labels("ModelLoadError")
        for kind in ("bundle_refused", "downgrade_refused"):
            self.agent_errors.labels(kind)
        for kind in ("fetched", "unchanged"):
            self.agent_syncs.labels(kind)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        hot = self.hot
        key = (route, status)
        hot.requests[key] = hot.requests.get(key, 0) + 1
        latency = hot.request_latency.get(route)
        if latency is None:
            latency = hot.request_latency[route] = Buckets(LATENCY_BUCKETS)
        latency.observe(seconds)

    def serving(self, name: str, version: int, sha256: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, str(version), sha256).set(1)
        self.model_version.set(version)
        self.swaps.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
