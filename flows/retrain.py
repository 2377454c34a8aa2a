"""The retrain-on-drift flow: started by the `edgewave.drift.detected` event (a deployment
trigger in prefect.yaml), it retrains with the sites' labelled feedback, then rolls the new
version out when it passes the gate."""

from __future__ import annotations

from prefect import flow
from prefect.runtime import flow_run

from edgewave.flows.release import release
from edgewave.flows.rollout import result_of, rollout
from edgewave.tasks.drift import steps as drift_steps
from edgewave.tasks.platform.runs import prefect_run_url, run_logger
from edgewave.tasks.platform.settings import active


def _retrain_name() -> str:
    sites = flow_run.parameters.get("sites") or []
    return f"retrain after drift at {', '.join(sites)}" if sites else "retrain (started by hand)"


@flow(name="retrain-on-drift", log_prints=True, flow_run_name=_retrain_name)
def retrain_on_drift(model: str = "", sites: list[str] | None = None, reason: str = "", drift_event: str = "",
                     check_id: str = "") -> dict:
    """Release with the sites' feedback, then roll the new version out if it passed the gate. Started by
    an `edgewave.drift.detected` event; the parameters are what the event said, for the record.

    Args:
        model: The model the event is about; must be this deployment's model (empty: this deployment's).
        sites: The sites that drifted.
        reason: The drift check's summary.
        drift_event: The id of the event that started this run.
        check_id: The drift check that emitted the event: its artifact gets a link to this run.
    """
    settings = active()
    log = run_logger()
    if model and model != settings.model_name:
        raise ValueError(f"drift event is about model {model!r}, but this deployment serves "
                         f"{settings.model_name!r} (EDGEWAVE_MODEL_NAME)")
    log.info("retraining %s after drift at %s (event %s): %s", settings.model_name, ", ".join(sites or []) or "-",
             drift_event or "-", reason or "-")
    if check_id:
        drift_steps.link_retraining(settings.model_name, check_id, flow_run.name or "retraining", prefect_run_url())
    released = release(with_feedback=True)
    result = {"release": released.model_dump(), "rollout": None, "drift_event": drift_event, "sites": sites}
    if not released.staged:
        log.warning("v%d did not pass the gate (%s): nothing rolled out", released.version, released.gate_reason)
        return result
    result["rollout"] = result_of(rollout(released.version, reason=f"retrained after drift: {reason}",
                                          return_state=True))
    return result
