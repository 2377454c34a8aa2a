"""Site telemetry for canary analysis: counters from a site's /metrics, and what changed
between two readings.

A reading is cumulative (counters and histogram buckets as the site exposes them); analysis
works on the difference of two readings taken `interval` apart, so canary and baseline are
compared over the same window. Parsing uses prometheus_client's own parser.
"""

from __future__ import annotations

import logging
import math
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from prometheus_client.parser import text_string_to_metric_families

from edgewave.tasks.platform.fleetfile import Site
from edgewave.tasks.rollout.prometheus import JOB

PREDICT = "/v1/predict"
log = logging.getLogger("edgewave.telemetry")


@dataclass(frozen=True)
class Reading:
    """Cumulative counters of one site at one moment."""

    version: int
    ok: float = 0.0  # predict requests answered 2xx
    errors: float = 0.0  # predict requests answered 5xx
    latency_buckets: tuple[tuple[float, float], ...] = ()  # (le, cumulative count), ascending
    confidence_sum: float = 0.0
    confidence_count: float = 0.0
    rows: float = 0.0
    failures_predicted: float = 0.0
    confidence_buckets: tuple[tuple[float, float], ...] = ()  # (le, cumulative count) of max class probability
    pods: tuple[tuple[str, Reading], ...] = ()  # a site of several pods: each pod's own reading
    site_id: str | None = None  # who answered (`edgewave_site_info`); None: it did not say
    fleet_id: str | None = None


MIXED = -1  # the version of a site whose pods do not all serve one version: not converged to any
NO_POD = Reading(version=0)  # a pod that does not answer: serves nothing


def wrong_site(site_id: str | None, fleet_id: str | None, site: Site, fleet: str, address: str) -> str | None:
    """Why the endpoint at `address`, which states `site_id` of `fleet_id`, is not `site` of this
    fleet; None when it is. Anything else answering on a site's address (another fleet's site left
    running on the same port, another site, a process that is no site) never counts as the site."""
    if site_id == site.id and fleet_id == fleet:
        return None
    found = "an endpoint that states no site id" if not site_id else (
        f"{site_id} of fleet {fleet_id}" if fleet_id else f"{site_id} of no fleet (started without EDGEWAVE_FLEET_ID)")
    return f"wrong site at {address}: expected {site.id} of fleet {fleet}, found {found}"


def warn_once(warn: Callable[[str], None]) -> Callable[[str], None]:
    """`warn`, saying each distinct message once: a reader polls every half second."""
    said: set[str] = set()

    def once(message: str) -> None:
        if message not in said:
            said.add(message)
            warn(message)
    return once


def of_pods(pods: dict[str, Reading]) -> Reading:
    """One site read from its pods (Kubernetes replicas): counters and histogram buckets summed,
    the version every pod reports, or MIXED while they differ (a pod still on the old version, or
    one that does not answer): a site has converged only when all its pods serve the new version.
    Each pod's reading is kept, so a window is taken pod by pod (see `window`)."""
    readings = list(pods.values())
    versions = {r.version for r in readings}
    identities = {(r.site_id, r.fleet_id) for r in readings if r is not NO_POD}
    site_id, fleet_id = identities.pop() if len(identities) == 1 else (None, None)
    return Reading(
        version=versions.pop() if len(versions) == 1 else MIXED,
        ok=sum(r.ok for r in readings), errors=sum(r.errors for r in readings),
        latency_buckets=summed_buckets(readings),
        confidence_buckets=summed_buckets(readings, "confidence_buckets"),
        confidence_sum=sum(r.confidence_sum for r in readings),
        confidence_count=sum(r.confidence_count for r in readings),
        rows=sum(r.rows for r in readings), failures_predicted=sum(r.failures_predicted for r in readings),
        pods=tuple(sorted(pods.items())), site_id=site_id, fleet_id=fleet_id,
    )


def summed_buckets(parts: list, histogram: str = "latency_buckets") -> tuple[tuple[float, float], ...]:
    """Cumulative histogram buckets of several readings or windows added bound by bound."""
    each = [dict(getattr(p, histogram)) for p in parts]
    bounds = sorted({le for buckets in each for le in buckets})
    return tuple((le, sum(buckets.get(le, 0.0) for buckets in each)) for le in bounds)


def site_reading(pods: dict[str, Reading | None]) -> Reading | None:
    """A site from its targets' readings (None: the target does not answer): None when none
    answers, the one reading of a single-process site, else the pods' sum."""
    if all(r is None for r in pods.values()):
        return None
    if len(pods) == 1:
        return next(iter(pods.values()))
    return of_pods({pod: r or NO_POD for pod, r in pods.items()})


@dataclass(frozen=True)
class Window:
    """What one site did between two readings (or several sites, summed)."""

    requests: float
    errors: float
    latency_buckets: tuple[tuple[float, float], ...]
    confidence_sum: float
    confidence_count: float
    rows: float
    failures_predicted: float
    sites: tuple[str, ...] = field(default=())
    confidence_buckets: tuple[tuple[float, float], ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests > 0 else math.nan

    @property
    def p99(self) -> float:
        return quantile(0.99, self.latency_buckets)

    @property
    def mean_confidence(self) -> float:
        return self.confidence_sum / self.confidence_count if self.confidence_count > 0 else math.nan

    @property
    def failure_rate(self) -> float:
        return self.failures_predicted / self.rows if self.rows > 0 else math.nan


def quantile(q: float, buckets: tuple[tuple[float, float], ...]) -> float:
    """Like PromQL's histogram_quantile: linear within the bucket; NaN with no observations."""
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    previous_le, previous_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return previous_le  # beyond the last finite bucket: its upper bound, as Prometheus does
            if count == previous_count:
                return le
            return previous_le + (le - previous_le) * (rank - previous_count) / (count - previous_count)
        previous_le, previous_count = le, count
    return math.nan


def parse(text: str) -> Reading:
    """A Reading from the exposition text of an edgewave site."""
    values: dict[str, float] = {}
    ok = errors = 0.0
    buckets: dict[float, float] = {}
    confidence: dict[float, float] = {}
    failures = 0.0
    positives: float | None = None
    identity: tuple[str | None, str | None] = (None, None)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, sample.value
            if name == "edgewave_requests_total" and labels.get("route") == PREDICT:
                status = int(labels["status"])
                if 200 <= status < 300:
                    ok += value
                elif status >= 500:
                    errors += value
            elif name == "edgewave_request_duration_seconds_bucket" and labels.get("route") == PREDICT:
                buckets[float(labels["le"])] = value
            elif name == "edgewave_prediction_confidence_bucket":
                confidence[float(labels["le"])] = value
            elif name == "edgewave_predictions_total" and labels.get("label") == "failure":
                failures += value  # a site older than edgewave_positive_predictions_total: a table model's
            elif name == "edgewave_positive_predictions_total":
                positives = value
            elif name == "edgewave_site_info":
                identity = labels.get("site_id") or None, labels.get("fleet_id") or None
            elif not labels:
                values[name] = value
    return Reading(
        version=int(values.get("edgewave_model_version", 0)),
        ok=ok, errors=errors, latency_buckets=tuple(sorted(buckets.items())),
        confidence_buckets=tuple(sorted(confidence.items())),
        confidence_sum=values.get("edgewave_prediction_confidence_sum", 0.0),
        confidence_count=values.get("edgewave_prediction_confidence_count", 0.0),
        rows=values.get("edgewave_predicted_rows_total", 0.0),
        failures_predicted=failures if positives is None else positives,
        site_id=identity[0], fleet_id=identity[1],
    )


def scrape(url: str, timeout: float = 5.0) -> Reading:
    """Read a site's /metrics; raises OSError when the site is unreachable."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode())


def scrape_sites(sites: list[Site], fleet: str, concurrency: int = 32,
                 warn: Callable[[str], None] = log.warning) -> dict[str, Reading | None]:
    """Every site's /metrics at once; an unreachable site reads as None, and so does an endpoint
    that is not the site of this fleet (`wrong_site`, said through `warn`). A site of several pods
    reads as their sum (`of_pods`), None only when no pod answers."""
    targets = [(site, pod, url) for site in sites for pod, url in site.scrape_targets.items()]

    def one(target: tuple[Site, str, str]) -> Reading | None:
        site, _, url = target
        try:
            reading = scrape(url, timeout=3)
        except (OSError, ValueError):
            return None
        problem = wrong_site(reading.site_id, reading.fleet_id, site, fleet, url)
        if problem:
            warn(problem)
            return None
        return reading

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets)))) as pool:
        read = list(pool.map(one, targets))
    by_site: dict[str, dict[str, Reading | None]] = {site.id: {} for site in sites}
    for (site, pod, _), reading in zip(targets, read, strict=True):
        by_site[site.id][pod] = reading
    return {site: site_reading(pods) for site, pods in by_site.items()}


def window(before: Reading, after: Reading, site: str = "") -> Window:
    """What happened between two readings of one site. A restart (counters went down) counts
    from zero, as Prometheus' increase() does. A site of several pods is taken pod by pod and
    summed (sum by (site) of increase()): a pod replaced by a new one counts from zero, one that
    went away adds nothing, and one pod's restart does not turn the others' totals into a burst."""
    if after.pods:
        earlier = dict(before.pods)
        summed = combine([window(earlier.get(pod, NO_POD), reading) for pod, reading in after.pods])
        assert summed is not None  # after.pods is not empty
        return replace(summed, sites=(site,) if site else ())

    def delta(a: float, b: float) -> float:
        return b - a if b >= a else b

    def buckets(earlier: tuple[tuple[float, float], ...], later: tuple[tuple[float, float], ...]):
        known = dict(earlier)
        return tuple((le, delta(known.get(le, 0.0), count)) for le, count in later)

    return Window(
        requests=delta(before.ok + before.errors, after.ok + after.errors),
        errors=delta(before.errors, after.errors),
        latency_buckets=buckets(before.latency_buckets, after.latency_buckets),
        confidence_buckets=buckets(before.confidence_buckets, after.confidence_buckets),
        confidence_sum=delta(before.confidence_sum, after.confidence_sum),
        confidence_count=delta(before.confidence_count, after.confidence_count),
        rows=delta(before.rows, after.rows),
        failures_predicted=delta(before.failures_predicted, after.failures_predicted),
        sites=(site,) if site else (),
    )


def combine(windows: list[Window]) -> Window | None:
    """Several sites' windows as one population (the baseline); None when there are none."""
    if not windows:
        return None
    return Window(
        requests=sum(w.requests for w in windows), errors=sum(w.errors for w in windows),
        latency_buckets=summed_buckets(windows),
        confidence_buckets=summed_buckets(windows, "confidence_buckets"),
        confidence_sum=sum(w.confidence_sum for w in windows), confidence_count=sum(w.confidence_count for w in windows),
        rows=sum(w.rows for w in windows), failures_predicted=sum(w.failures_predicted for w in windows),
        sites=tuple(s for w in windows for s in w.sites),
    )


# ----------------------------------------------------------------------------- PromQL

PROMQL = {
    "version": "edgewave_model_version",
    "requests": 'edgewave_requests_total{route="/v1/predict"}',
    "latency": 'edgewave_request_duration_seconds_bucket{route="/v1/predict"}',
    "confidence": "edgewave_prediction_confidence_bucket",
    "confidence_sum": "edgewave_prediction_confidence_sum",
    "confidence_count": "edgewave_prediction_confidence_count",
    "rows": "edgewave_predicted_rows_total",
    "failures": "edgewave_positive_predictions_total",
    "identity": "edgewave_site_info",
    "up": "up",
    "seen": "timestamp(up{})",  # when each target's latest sample was taken (a remote-written one may be old)
}


def _query(base_url: str, promql: str, job: str, timeout: float) -> list[dict]:
    import json
    from urllib.parse import urlencode

    selector = promql.replace("{", f'{{job="{job}",', 1) if "{" in promql else f'{promql}{{job="{job}"}}'
    url = f"{base_url.rstrip('/')}/api/v1/query?{urlencode({'query': selector})}"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise OSError(f"Prometheus query {selector!r} failed: {body.get('error', body)}")
    return body["data"]["result"]


def prometheus_readings(base_url: str, sites: list[Site], fleet: str, job: str = JOB, timeout: float = 10.0,
                        max_age_seconds: float | None = None,
                        warn: Callable[[str], None] = log.warning) -> dict[str, Reading | None]:
    """The same Readings as `scrape`, from a real Prometheus: one instant query per series for
    the whole fleet (targets carry a `site` label, see tasks/rollout/prometheus.py). A site whose
    targets are all down or absent reads as None. A site with several targets (its pods, told
    apart by their `pod` label, else their `instance`) reads as their sum (`of_pods`).

    `max_age_seconds`: a target whose latest sample is older reads as not answering. A central
    Prometheus fed by remote write keeps a cut-off site's last samples for its 5-minute lookback:
    without this, a site whose link is down would read as up and idle, not as offline.

    A target that does not state itself as the site its `site` label names, of this fleet
    (`wrong_site`, said through `warn`), reads as not answering."""
    results = {key: _query(base_url, q, job, timeout) for key, q in PROMQL.items()}
    by_id = {s.id: s for s in sites}
    wanted = set(by_id)
    pods: dict[str, dict[str, dict]] = {s: {} for s in by_id}  # site → pod → its values

    def each(key: str):
        for item in results[key]:
            labels = item["metric"]
            if labels.get("site") in wanted:
                pod = labels.get("pod") or labels.get("instance", "")
                values = pods[labels["site"]].setdefault(pod, {"buckets": {}, "confidence": {}, "ok": 0.0,
                                                                "errors": 0.0})
                at, value = float(item["value"][0]), float(item["value"][1])
                yield values, labels, at - value if key == "seen" else value  # "seen": the sample's age

    for values, _, value in each("up"):
        values["up"] = value == 1
    for values, labels, _ in each("identity"):
        values["identity"] = labels.get("site_id") or None, labels.get("fleet_id") or None
    for site_id, by_pod in pods.items():
        for pod, values in by_pod.items():
            if values.get("up"):
                stated_site, stated_fleet = values.get("identity", (None, None))
                problem = wrong_site(stated_site, stated_fleet, by_id[site_id], fleet, pod or site_id)
                if problem:
                    warn(problem)
                    values["up"] = False
    for values, _, age in each("seen"):
        if max_age_seconds is not None and age > max_age_seconds:
            values["up"] = False
    for values, _, value in each("version"):
        values["version"] = int(value)
    for values, labels, value in each("requests"):
        status = int(labels.get("status", "0"))
        if 200 <= status < 300:
            values["ok"] += value
        elif status >= 500:
            values["errors"] += value
    for values, labels, value in each("latency"):
        values["buckets"][float(labels["le"])] = value
    for values, labels, value in each("confidence"):
        values["confidence"][float(labels["le"])] = value
    for key in ("confidence_sum", "confidence_count", "rows", "failures"):
        for values, _, value in each(key):
            values[key] = values.get(key, 0.0) + value

    def reading(v: dict) -> Reading | None:
        if not v.get("up") or "version" not in v:
            return None
        return Reading(
            version=v["version"], ok=v["ok"], errors=v["errors"], latency_buckets=tuple(sorted(v["buckets"].items())),
            confidence_buckets=tuple(sorted(v["confidence"].items())),
            confidence_sum=v.get("confidence_sum", 0.0), confidence_count=v.get("confidence_count", 0.0),
            rows=v.get("rows", 0.0), failures_predicted=v.get("failures", 0.0),
            site_id=v["identity"][0], fleet_id=v["identity"][1])

    return {site: site_reading({pod: reading(v) for pod, v in by_pod.items()}) for site, by_pod in pods.items()}
