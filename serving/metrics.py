"""Prometheus metrics of an edge site (service + agent), in their own registry.

Canary analysis reads these: error rate from `edgewave_requests_total`, latency from the
request histogram, confidence and predicted-failure rate from the prediction metrics, and the
running version from `edgewave_model_info`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
CONFIDENCE_BUCKETS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)


class SiteMetrics:
    def __init__(self, site_id: str) -> None:
        disable_created_metrics()  # `_created` series double the scrape and nothing here reads them
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.site_id = site_id
        self.requests = Counter("edgewave_requests", "HTTP requests by route and status.", ["route", "status"], registry=r)
        self.request_seconds = Histogram("edgewave_request_duration_seconds", "Time from request to response.",
                                         ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram("edgewave_inference_duration_seconds", "ONNX Runtime time per request.",
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.rows = Counter("edgewave_predicted_rows", "Rows scored.", registry=r)
        self.confidence = Histogram("edgewave_prediction_confidence", "max(p, 1-p) per scored row.",
                                    buckets=CONFIDENCE_BUCKETS, registry=r)
        self.predicted = Counter("edgewave_predictions", "Scored rows by predicted class.", ["label"], registry=r)
        self.out_of_range = Counter("edgewave_out_of_range_values", "Values outside the training range.",
                                    ["feature"], registry=r)
        self.model_info = Gauge("edgewave_model_info", "The model being served (value 1).",
                                ["model", "version", "sha256"], registry=r)
        self.model_version = Gauge("edgewave_model_version", "Version being served (0: none).", registry=r)
        self.load_failures = Counter("edgewave_model_load_failures", "Bundles refused, by reason.", ["reason"],
                                     registry=r)
        self.swaps = Counter("edgewave_model_swaps", "Models switched in.", registry=r)
        self.samples_written = Counter("edgewave_samples_written", "Sampled rows written to window files.", registry=r)
        self.samples_dropped = Counter("edgewave_samples_dropped", "Sampled rows dropped (buffer or disk bound).",
                                       registry=r)
        self.agent_offline = Gauge("edgewave_agent_offline", "1 while the desired-state remote or the monitoring "
                                   "store is unreachable.", registry=r)
        self.agent_last_sync = Gauge("edgewave_agent_last_sync_timestamp_seconds", "Last successful sync.", registry=r)
        self.agent_applied_version = Gauge("edgewave_agent_applied_version", "Version the agent last applied.",
                                           registry=r)
        self.agent_errors = Counter("edgewave_agent_errors", "Agent errors by kind.", ["kind"], registry=r)
        self.windows_shipped = Counter("edgewave_agent_windows_shipped", "Sample windows uploaded.", registry=r)
        self.buffered_windows = Gauge("edgewave_agent_buffered_windows", "Sample windows waiting to ship.", registry=r)
        self._request_children: dict[tuple[str, int], Counter] = {}
        self._latency_children: dict[str, Histogram] = {}
        self.model_version.set(0)
        self.agent_offline.set(0)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Hot path: label lookups are cached per (route, status)."""
        key = (route, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, str(status))
        child.inc()
        latency = self._latency_children.get(route)
        if latency is None:
            latency = self._latency_children[route] = self.request_seconds.labels(route)
        latency.observe(seconds)

    def serving(self, name: str, version: int, sha256: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name, str(version), sha256).set(1)
        self.model_version.set(version)
        self.swaps.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
