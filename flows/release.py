"""The release flow: data → train (tree search, MLP, their blend) → ONNX + parity → signed bundle → MLflow
@candidate → quality gate → @staging."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow
from pydantic import BaseModel

from edgewave.serving.redact import redact
from edgewave.tasks.platform.progress import Steps
from edgewave.tasks.platform.runs import name_run, retried, run_logger
from edgewave.tasks.platform.settings import active
from edgewave.tasks.release import steps
from edgewave.tasks.release.train import flagging_every_row, pick_champion

STEPS = ["read data", "train trees", "train MLP", "export ONNX", "register", "sign bundle", "quality gate",
         "serving image"]


class ReleaseResult(BaseModel):
    release_id: str
    model: str
    version: int
    family: str
    staged: bool
    gate_reason: str
    bundle_url: str
    metrics: dict[str, dict[str, float]]


@flow(name="release", log_prints=True, flow_run_name="release (training a new version)")
def release(shuffle_labels: bool = False, force: bool = False, with_feedback: bool = False) -> ReleaseResult:
    """Train both families (and their blend), ship the best on validation as a signed ONNX bundle, and gate it.

    `with_feedback` adds the sites' recent labelled rows (maintenance-log feedback in the
    monitoring store) to the training data: what retraining after drift does.

    `shuffle_labels` and `force` exist for the rollback demo: a model that learned nothing,
    pushed past the gate, so the canary analysis has something to catch.
    """
    settings = active()
    log = run_logger()
    seed = steps.draw_seed(settings)
    release_id = f"rel-{datetime.now(UTC):%Y%m%dT%H%M%S}-{seed}"
    log.info("release %s: model %s, data seed %d, tracking %s", release_id, settings.model_name, seed,
             redact(settings.mlflow_tracking_uri))

    progress = Steps("release", STEPS)
    progress.start("read data")
    retried(steps.check_model_inputs, settings)(settings)
    data = steps.split(settings, steps.load_training_data(settings, seed, shuffle_labels, with_feedback), seed)
    progress.start("train trees")
    trees = steps.fit_trees(data, seed, settings.search_budget)
    progress.start("train MLP")
    trained = steps.choose(data, trees, steps.fit_torch(data, seed))
    if shuffle_labels:  # the rollback demo's model: it must be caught, whatever the search picked
        trained = [flagging_every_row(model, data) for model in trained]
    progress.start("export ONNX")
    candidates = [steps.export(model, data, settings) for model in trained]
    champion = next(c for c in candidates if c.trained is pick_champion([c.trained for c in candidates]))
    progress.start("register")
    run_ids = {c.trained.family: retried(steps.log_run, settings)(settings, release_id, c, data) for c in candidates}
    version = retried(steps.register, settings)(settings, run_ids[champion.trained.family], champion, data)
    name_run(f"release v{version.version}")
    progress.start("sign bundle")
    folder = steps.build_bundle(settings, version, champion, data, release_id)
    url = retried(steps.store_bundle, settings)(settings, version, folder)
    progress.start("quality gate")
    decision = retried(steps.quality_gate, settings)(settings, version, champion, data)
    retried(steps.record_gate, settings)(settings, version, decision, force)
    progress.start("serving image")
    steps.build_image(settings, version, folder, decision.passed or force)
    retried(steps.publish_summary, settings)(settings, release_id, version, candidates, champion, decision, url)
    progress.finish(f"v{version.version} {'staged' if decision.passed or force else 'rejected'}")

    log.info("%s v%d (%s): gate %s: %s", version.name, version.version, champion.trained.family,
             "PASSED, now @staging" if decision.passed else "REJECTED", decision.reason)
    return ReleaseResult(
        release_id=release_id, model=version.name, version=version.version, family=champion.trained.family,
        staged=decision.passed or force, gate_reason=decision.reason + (" (FORCED to @staging)" if force and not decision.passed else ""),
        bundle_url=url,
        metrics={c.trained.family: c.trained.metrics.as_dict() for c in candidates},
    )
