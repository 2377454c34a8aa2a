"""The release flow: data → train (tree search, MLP, their blend) → ONNX + parity → signed bundle → MLflow
@candidate → quality gate → @staging."""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime

from prefect import flow
from pydantic import BaseModel

from edgewave.serving.redact import redact
from edgewave.tasks.data.images import ImageSpec
from edgewave.tasks.data.spec import load_any_spec
from edgewave.tasks.platform.progress import Steps
from edgewave.tasks.platform.runs import name_run, retried, run_logger
from edgewave.tasks.platform.settings import Settings, active
from edgewave.tasks.release import image_steps, registry, steps
from edgewave.tasks.release.gate import GateDecision
from edgewave.tasks.release.registry import RegisteredVersion
from edgewave.tasks.release.train import flagging_every_row, pick_champion

STEPS = ["read data", "train trees", "train MLP", "export ONNX", "register", "sign bundle", "quality gate",
         "serving image"]
IMAGE_STEPS = ["read images", "train CNN", "train baseline", "export ONNX", "register", "sign bundle", "quality gate",
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
def release(with_feedback: bool = False) -> ReleaseResult:
    """Train both families (and their blend; for camera images a CNN and a plain baseline), ship the best
    on validation as a signed ONNX bundle, and gate it: only a version that passes goes to @staging.

    Args:
        with_feedback: Also train on the sites' recent labelled rows (maintenance-log feedback in the
            monitoring store), as retraining after drift does. Off: the dataset alone.
    """
    return _release(with_feedback=with_feedback)


@flow(name="release", log_prints=True, flow_run_name="release (a deliberately bad model, for the demo)")
def release_for_demo(shuffle_labels: bool = False, force: bool = False, with_feedback: bool = False) -> ReleaseResult:
    """The release with the rollback demo's two switches, never a deployed form: `shuffle_labels` trains a
    model that learned nothing and `force` stages it past the gate, so the canary analysis has something
    to catch. Reached from `edgewave demo` and `edgewave release --shuffle-labels --force`."""
    return _release(shuffle_labels, force, with_feedback)


def _release(shuffle_labels: bool = False, force: bool = False, with_feedback: bool = False) -> ReleaseResult:
    settings = active()
    log = run_logger()
    seed = steps.draw_seed(settings)
    started = datetime.now(UTC)
    release_id = f"rel-{started:%Y%m%dT%H%M%S}-{seed}"
    log.info("release %s: model %s, data seed %d, tracking %s", release_id, settings.model_name, seed,
             redact(settings.mlflow_tracking_uri))

    retried(steps.check_model_inputs, settings)(settings)
    parent = retried(steps.start_release_run, settings)(settings, release_id, started.timestamp())
    try:
        if isinstance(load_any_spec(settings.dataset), ImageSpec):
            result = _images(settings, release_id, seed, shuffle_labels, force, with_feedback, parent)
        else:
            result = _tables(settings, release_id, seed, shuffle_labels, force, with_feedback, parent)
    except BaseException:
        with suppress(Exception):  # the release's own error is what matters; MLflow may be why it failed
            registry.end_release_run(settings, parent, "FAILED")
        raise
    retried(steps.end_release_run, settings)(settings, parent)
    return result


def _tables(settings: Settings, release_id: str, seed: int, shuffle_labels: bool, force: bool,
            with_feedback: bool, parent: str) -> ReleaseResult:
    """Rows of sensor readings: tree ensembles, an MLP and their blend."""
    progress = Steps("release", STEPS)
    progress.start("read data")
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
    run_ids = {c.trained.family: retried(steps.log_run, settings)(settings, release_id, c, data, parent)
               for c in candidates}
    version = retried(steps.register, settings)(settings, run_ids[champion.trained.family], champion, data)
    retried(steps.link_version, settings)(settings, version, parent)
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
    return _finished(progress, version, champion.trained.family, decision, force, release_id, url,
                     {c.trained.family: c.trained.metrics.as_dict() for c in candidates})


def _images(settings: Settings, release_id: str, seed: int, shuffle_labels: bool, force: bool,
            with_feedback: bool, parent: str) -> ReleaseResult:
    """Camera images: a CNN trained from scratch against a plain baseline, chosen on validation."""
    progress = Steps("release", IMAGE_STEPS)
    progress.start("read images")
    data = image_steps.split(image_steps.load_training_images(settings, seed, shuffle_labels, with_feedback))
    progress.start("train CNN")
    cnn = image_steps.fit_cnn(data, seed, settings.cnn_epochs, settings.cnn_widths)
    progress.start("train baseline")
    baseline = image_steps.fit_baseline(data, seed)
    progress.start("export ONNX")
    candidates = [image_steps.export(model, data, settings) for model in (cnn, baseline)]
    champion = next(c for c in candidates if c.trained is pick_champion([c.trained for c in candidates]))
    progress.start("register")
    run_ids = {c.trained.family: retried(image_steps.log_run, settings)(settings, release_id, c, data, parent)
               for c in candidates}
    version = retried(image_steps.register, settings)(settings, run_ids[champion.trained.family], champion, data)
    retried(steps.link_version, settings)(settings, version, parent)
    name_run(f"release v{version.version}")
    progress.start("sign bundle")
    folder = image_steps.build_bundle(settings, version, champion, data, release_id)
    url = retried(steps.store_bundle, settings)(settings, version, folder)
    progress.start("quality gate")
    decision = retried(image_steps.quality_gate, settings)(settings, version, champion, data)
    retried(steps.record_gate, settings)(settings, version, decision, force)
    progress.start("serving image")
    steps.build_image(settings, version, folder, decision.passed or force)
    retried(image_steps.publish_summary, settings)(settings, release_id, version, candidates, champion, decision, url,
                                                   data)
    return _finished(progress, version, champion.trained.family, decision, force, release_id, url,
                     {c.trained.family: c.trained.metrics.as_dict() for c in candidates})


def _finished(progress: Steps, version: RegisteredVersion, family: str, decision: GateDecision, force: bool,
              release_id: str, url: str, metrics: dict[str, dict[str, float]]) -> ReleaseResult:
    staged = decision.passed or force
    if staged:  # @staging moved: the rollout form offers it
        steps.show_versions_on_forms(active())
    progress.finish(f"v{version.version} {'staged' if staged else 'rejected'}")
    run_logger().info("%s v%d (%s): gate %s: %s", version.name, version.version, family,
                      "PASSED, now @staging" if decision.passed else "REJECTED", decision.reason)
    return ReleaseResult(
        release_id=release_id, model=version.name, version=version.version, family=family, staged=staged,
        gate_reason=decision.reason + (" (FORCED to @staging)" if force and not decision.passed else ""),
        bundle_url=url, metrics=metrics,
    )
