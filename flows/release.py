"""The release flow: data → train (sklearn, torch) → ONNX + parity → signed bundle → MLflow
@candidate → quality gate → @staging."""

from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from pydantic import BaseModel

from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import steps as step
from edgewave.tasks.release.train import pick_champion


class ReleaseResult(BaseModel):
    release_id: str
    model: str
    version: int
    family: str
    staged: bool
    gate_reason: str
    bundle_url: str
    metrics: dict[str, dict[str, float]]


@flow(name="release", log_prints=True)
def release(settings: Settings | None = None, shuffle_labels: bool = False, force: bool = False,
            with_feedback: bool = False) -> ReleaseResult:
    """Train both families, ship the better one as a signed ONNX bundle, and gate it.

    `with_feedback` adds the sites' recent labelled rows (maintenance-log feedback in the
    monitoring store) to the training data: what retraining after drift does.

    `shuffle_labels` and `force` exist for the rollback demo: a model that learned nothing,
    pushed past the gate, so the canary analysis has something to catch.
    """
    settings = settings or Settings()
    log = get_run_logger()
    seed = step.draw_seed(settings)
    release_id = f"rel-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{seed}"
    log.info("release %s: model %s, data seed %d, tracking %s", release_id, settings.model_name, seed,
             settings.mlflow_tracking_uri)

    data = step.split(step.load_training_data(settings, seed, shuffle_labels, with_feedback), seed)
    candidates = [step.export(model, data, settings) for model in (step.fit_sklearn(data, seed), step.fit_torch(data, seed))]
    champion = next(c for c in candidates if c.trained is pick_champion([c.trained for c in candidates]))
    run_ids = {c.trained.family: step.log_run(settings, release_id, c, data) for c in candidates}

    version = step.register(settings, run_ids[champion.trained.family], champion, data)
    folder = step.build_bundle(settings, version, champion, data, release_id)
    url = step.store_bundle(settings, version, folder)
    decision = step.quality_gate(settings, version, champion, data)
    step.record_gate(settings, version, decision, force)
    step.build_image(settings, version, folder, decision.passed or force)
    step.publish_summary(settings, release_id, version, candidates, champion, decision, url)

    log.info("%s v%d (%s): gate %s: %s", version.name, version.version, champion.trained.family,
             "PASSED, now @staging" if decision.passed else "REJECTED", decision.reason)
    return ReleaseResult(
        release_id=release_id, model=version.name, version=version.version, family=champion.trained.family,
        staged=decision.passed or force, gate_reason=decision.reason + (" (FORCED to @staging)" if force and not decision.passed else ""),
        bundle_url=url,
        metrics={c.trained.family: c.trained.metrics.as_dict() for c in candidates},
    )
