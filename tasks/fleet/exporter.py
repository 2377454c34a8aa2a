"""The control plane's own metrics, for the central Prometheus and its alert rules.

Sites report what they serve; only the control plane knows that a rollout is held or rolled
back and that drift was confirmed at a site. `edgewave exporter` serves those facts as series
(job `edgewave-control-plane`): the last rollout of the model from the desired-state remote,
read through a clone of the exporter's own (never the controller's working clone, which a
running rollout commits in), and the last drift check from the monitoring store. A scrape
that finds them older than `refresh_seconds` reads them again first; a source that cannot be
read keeps its last known values and says so (`edgewave_control_plane_read_errors`), so an
unreachable remote never makes a held rollout look resolved.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import get_args

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edgewave.serving.redact import redact
from edgewave.tasks.platform.monitoring import MonitoringStore, last_drift_check
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.record import Status

STATUSES = get_args(Status)
log = logging.getLogger("edgewave.exporter")


@dataclass
class ControlPlaneState:
    """What the alert rules need, as of `read_at`; `errors` names what could not be read."""

    rollout: dict | None = None
    drift: dict | None = None
    read_at: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def read_state(settings: Settings, repo: DesiredStateRepo, previous: ControlPlaneState) -> ControlPlaneState:
    state = ControlPlaneState(rollout=previous.rollout, drift=previous.drift, read_at=time.time())
    try:
        repo.follow()
        state.rollout = repo.last_record(settings.model_name)
    except Exception as exc:  # an unreachable remote must not take the other series down
        state.errors["desired_state"] = redact(str(exc))
    try:
        state.drift = last_drift_check(MonitoringStore.of(settings), settings.model_name)
    except Exception as exc:
        state.errors["monitoring_store"] = redact(str(exc))
    for source, error in state.errors.items():
        log.warning("cannot read the %s: %s", source.replace("_", " "), error)
    return state


class ControlPlaneCollector(Collector):
    """Serves the state read at most every `refresh_seconds` (one reader at a time)."""

    def __init__(self, settings: Settings, refresh_seconds: float = 15.0) -> None:
        self.settings = settings
        self.refresh_seconds = refresh_seconds
        self.repo = DesiredStateRepo(settings.desired_state_url, settings.home / "exporter" / "desired-state",
                                     settings.remote_access())
        self._lock = threading.Lock()
        self._state = ControlPlaneState()

    def state(self) -> ControlPlaneState:
        with self._lock:
            if time.time() - self._state.read_at >= self.refresh_seconds:
                self._state = read_state(self.settings, self.repo, self._state)
            return self._state

    def collect(self):
        state, model = self.state(), self.settings.model_name
        errors = GaugeMetricFamily("edgewave_control_plane_read_errors",
                                   "1 when the last read of a source (desired_state, monitoring_store) failed.",
                                   labels=["source"])
        for source in ("desired_state", "monitoring_store"):
            errors.add_metric([source], 1.0 if source in state.errors else 0.0)
        yield errors
        yield GaugeMetricFamily("edgewave_control_plane_read_timestamp_seconds", "When the sources were last read.",
                                value=state.read_at)

        status = GaugeMetricFamily("edgewave_rollout_status", "The model's last rollout or rollback: 1 for its "
                                   "status, 0 for the others.", labels=["model", "rollout_id", "kind", "version",
                                                                       "status"])
        record = state.rollout
        if record:
            for name in STATUSES:
                status.add_metric([model, record["id"], record.get("kind", "rollout"), str(record["version"]), name],
                                  1.0 if record.get("status") == name else 0.0)
        yield status

        drift = state.drift
        confirmed = GaugeMetricFamily("edgewave_drift_site_confirmed", "1 for a site the last drift check "
                                      "confirmed as drifted, 0 for a site it checked and did not.",
                                      labels=["model", "site"])
        if drift:
            checked = {s["site"] for s in drift.get("sites", []) if s.get("status") == "checked"}
            for site in sorted(checked | set(drift.get("sites_confirmed", []))):
                confirmed.add_metric([model, site], 1.0 if site in drift.get("sites_confirmed", []) else 0.0)
        yield confirmed
        detected = GaugeMetricFamily("edgewave_drift_detected", "1 when the last drift check found drift for the "
                                     "fleet (enough confirmed sites).", labels=["model", "check_id"])
        if drift:
            detected.add_metric([model, drift["check_id"]], 1.0 if drift.get("detected") else 0.0)
        yield detected


def serve(settings: Settings, host: str, port: int, refresh_seconds: float) -> None:
    """Serve /metrics until interrupted."""
    from edgewave.serving.redact import RedactingFormatter

    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    class Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args) -> None:  # one line per scrape says nothing
            pass

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ControlPlaneCollector(settings, refresh_seconds))
    server = make_server(host, port, make_wsgi_app(registry), handler_class=Quiet)
    log.info("control-plane metrics of %s on http://%s:%d/metrics (desired state %s, store %s)", settings.model_name,
             host, port, redact(settings.desired_state_url), redact(settings.monitoring_store))
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
