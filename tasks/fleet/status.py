"""The fleet's read model, what `edgewave status` tells: the registry's versions and aliases, each
site's desired and reported version, the rollout in progress and the last one, the last drift check
and its cooldown, and where the UIs are.

Each reads what the flows already write (the monitoring store's drift summaries and events, the
desired-state clone's lease and rollout record, the servers' pid records), so status needs no
server of its own and shows a rollout another machine is running.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from edgewave.serving.redact import redact
from edgewave.tasks.fleet import local
from edgewave.tasks.fleet.servers import links
from edgewave.tasks.platform.fleetfile import PolicyError, load_fleet_file
from edgewave.tasks.platform.monitoring import EVENTS, MonitoringStore, last_drift_check
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release.registry import check_reachable, registry_state
from edgewave.tasks.rollout.gitops import DesiredStateRepo
from edgewave.tasks.rollout.lease import Lease
from edgewave.tasks.rollout.lease import path as lease_path


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def checked_at(check_id: str) -> str | None:
    """When a check ran, from its id (`drift-20261127T120000123`)."""
    try:
        return datetime.strptime(check_id.removeprefix("drift-")[:15], "%Y%m%dT%H%M%S").replace(
            tzinfo=UTC).isoformat(timespec="seconds")
    except ValueError:
        return None


def drift_status(store: MonitoringStore, model: str, cooldown_minutes: float, now: float | None = None) -> dict:
    """The last check (when, each site's verdict and top feature, confirmed sites), the last drift
    event, and until when the cooldown holds back the next retraining."""
    now = time.time() if now is None else now
    summary = last_drift_check(store, model)
    event = (store.read_json(*EVENTS) or {}).get(model)
    until = event["at"] + cooldown_minutes * 60 if event else None
    last = None
    if summary is not None:  # the stored dict: the checks module (and scikit-learn under it) stays unloaded
        last = {
            "check_id": summary["check_id"], "at": checked_at(summary["check_id"]), "detected": summary["detected"],
            "reason": summary["reason"], "confirmed": summary["sites_confirmed"],
            "sites": [{"site": c["site"], "status": c["status"], "drifted": c["drifted"],
                       "drifted_share": round(c["drifted_share"], 3),
                       "top_feature": (c.get("top_features") or [None])[0],
                       "in_a_row": c["consecutive"], "confirmed": c["confirmed"]} for c in summary["sites"]],
        }
    return {
        "last_check": last,
        "last_event": {"check_id": event.get("check_id"), "at": _iso(event["at"])} if event else None,
        "cooldown_until": _iso(until) if until is not None and until > now else None,
    }


def rollout_in_progress(repo: DesiredStateRepo, model: str) -> dict | None:
    """The rollout holding the model's lease in the clone (as of its last sync): its wave, the
    sites converged, the measurements taken, and who holds the lease since when."""
    text = repo.read_file(lease_path(model))
    if not text:
        return None
    lease = Lease.model_validate_json(text)
    record = repo.record(lease.rollout_id) or {}
    waves = record.get("waves", [])
    current = next((w for w in waves if w["status"] in ("pending", "committed")), waves[-1] if waves else None)
    planned = record.get("policy", {}).get("analysis", {}).get("measurements")
    progress = {"id": lease.rollout_id, "kind": lease.kind, "version": lease.version, "phase": lease.phase,
                "holder": lease.owner(), "since": lease.acquired_at.isoformat(timespec="seconds"),
                "lease_until": lease.expires_at.isoformat(timespec="seconds"), "wave": None}
    if current is not None:
        progress["wave"] = {
            "number": current["index"] + 1, "of": len(waves), "name": current["name"], "status": current["status"],
            "sites": current["sites"], "converged": current.get("converged", []),
            "measurements": len(current.get("measurements", [])), "measurements_planned": planned,
        }
    return progress


def describe_rollout(progress: dict) -> str:
    """One line: `ro-… of v3: wave 2 of 3 (half), 1 of 2 sites converged, measurement 1 of 3; lease ctl:42`."""
    wave = progress["wave"]
    text = f"{progress['kind']} {progress['id']} of v{progress['version']} ({progress['phase']})"
    if wave:
        text += (f": wave {wave['number']} of {wave['of']} ({wave['name']}, {wave['status']}), "
                 f"{len(wave['converged'])} of {len(wave['sites'])} sites converged, "
                 f"{wave['measurements']} of {wave['measurements_planned']} measurements")
    return text + f"; lease held by {progress['holder']} since {progress['since']}"


def fleet_state(settings: Settings) -> dict:
    """Each site's desired and reported version, the last rollout with its decisions, the rollout in
    progress, and the last drift check with its cooldown (or the fleet file's error)."""
    from dataclasses import asdict

    try:
        fleet_file = load_fleet_file(settings.fleet_path)
    except PolicyError as exc:
        return {"error": str(exc)}
    sites = [asdict(s) for s in local.status(settings, fleet_file.fleet)]  # syncs the controller's clone
    repo = DesiredStateRepo.of(settings)
    cloned = (repo.path / ".git").exists()
    return {"fleet_file": str(settings.fleet_path), "sites": sites,
            "last_rollout": repo.last_record(settings.model_name) if cloned else None,
            "rollout_in_progress": rollout_in_progress(repo, settings.model_name) if cloned else None,
            "drift": drift_status(MonitoringStore.of(settings), settings.model_name,
                                  fleet_file.drift.cooldown_minutes)}


def writes(settings: Settings) -> dict[str, str]:
    """Where this control plane writes: its home and the stores in it or elsewhere (credentials redacted).
    A copied home writes to its own (tasks/platform/home.py); this says so before anything is written."""
    return {"home": str(settings.home.resolve()), "mlflow": redact(settings.mlflow_tracking_uri),
            "desired state": redact(settings.desired_state_url), "bundles": redact(settings.bundle_store),
            "monitoring": redact(settings.monitoring_store)}


def whole_state(settings: Settings) -> dict:
    """The registry (refused at once, naming it, when MLflow does not answer), the fleet, the UI links and
    where this home writes."""
    check_reachable(settings)
    return {"registry": registry_state(settings), "fleet": fleet_state(settings), "links": links(settings),
            "writes": writes(settings)}
