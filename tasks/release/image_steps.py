"""Thin Prefect tasks of the release flow for an image dataset (`kind: images`), over vision.py.

The same contract as steps.py for tables: side effects keyed by release id, training run and
model version, `cache_policy=NONE` on them, server-facing steps retried by the flow. What a
release does after the bundle is signed (store, gate record, serving image) is steps.py's own.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task

from edgewave.serving.bundle import key_id
from edgewave.serving.model import load_model
from edgewave.serving.redact import redact
from edgewave.tasks.data.images import ImageSet, ImageSpec, combined, labelled_images, load_images
from edgewave.tasks.data.spec import load_any_spec
from edgewave.tasks.data.surfaces import generate
from edgewave.tasks.platform.monitoring import MonitoringStore
from edgewave.tasks.platform.runs import LOCAL, REMOTE, markdown_link, run_logger
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import bundle as bundles
from edgewave.tasks.release import registry
from edgewave.tasks.release.gate import GateDecision
from edgewave.tasks.release.steps import gate_against_baseline, input_signature, version_tags
from edgewave.tasks.release.train import evaluate, stamped
from edgewave.tasks.release.vision import (
    ImageExport,
    ImageSplit,
    TrainedImageModel,
    export_image_model,
    image_reference,
    onnx_predict,
    split_images,
    train_baseline,
    train_cnn,
)


@dataclass(frozen=True)
class ImageCandidate:
    trained: TrainedImageModel
    exported: ImageExport


def image_spec(settings: Settings) -> ImageSpec:
    spec = load_any_spec(settings.dataset)
    if not isinstance(spec, ImageSpec):
        raise ValueError(f"{settings.dataset}: a table spec; the image release takes a spec of kind images")
    return spec


@task(name="load-training-images", **LOCAL)
def load_training_images(settings: Settings, seed: int, shuffle_labels: bool = False,
                         with_feedback: bool = False) -> ImageSet:
    """The plant's images when EDGEWAVE_DATA_PATH is set (in the spec's layout), else generated parts;
    plus the images people labelled at the sites (the monitoring store's feedback) when retraining.

    `shuffle_labels` breaks the link between images and classes on purpose: the rollback demo's model.
    """
    spec = image_spec(settings)
    if settings.data_path is not None:
        data = load_images(spec, settings.data_path)
    else:
        if spec.generator is None:
            raise ValueError(f"{settings.dataset}: no generator and no EDGEWAVE_DATA_PATH: nothing to train on")
        shape = spec.image
        images, labels = generate(settings.train_images, seed, size=(shape.height, shape.width),
                                  defects=spec.defect_classes)
        if shape.channels == 3:
            images = np.repeat(images, 3, axis=3)
        classes = (spec.ok_class, *spec.defect_classes)
        data = ImageSet(images, np.array([classes.index(c) for c in labels], dtype=np.int64),
                        tuple(f"generated/{seed}/{i}" for i in range(len(labels))), classes)
    if with_feedback:
        feedback = MonitoringStore.of(settings).read_feedback(settings.feedback_images_per_site)
        if not feedback.empty and "image" in feedback.columns:  # a part inspected twice is one example
            feedback = feedback[~feedback["image"].map(bytes).duplicated()].reset_index(drop=True)
        if not feedback.empty:
            if not {"image", "label"} <= set(feedback.columns):
                raise ValueError(f"feedback in {redact(settings.monitoring_store)} is not labelled images "
                                 f"(columns {list(feedback.columns)}); an image release reads `image` and `label`")
            labelled = labelled_images(spec, feedback, "site feedback")
            run_logger().info("retraining with %d labelled images of site feedback + %d base images",
                              len(labelled.files), len(data.files))
            data = combined(data, labelled)
    if shuffle_labels:
        data = ImageSet(data.images, np.random.default_rng(seed).permutation(data.labels), data.files, data.classes)
    return data


@task(name="split-images", **LOCAL)
def split(data: ImageSet) -> ImageSplit:
    """Train / validation / test by the hash of each image's pixels, per class."""
    return split_images(data)


@task(name="train-cnn", **LOCAL)
def fit_cnn(data: ImageSplit, seed: int, epochs: int, widths: tuple[int, int, int, int]) -> TrainedImageModel:
    started = time.time()
    return stamped([train_cnn(data, seed, epochs=epochs, widths=widths)], started)[0]


@task(name="train-image-baseline", **LOCAL)
def fit_baseline(data: ImageSplit, seed: int) -> TrainedImageModel:
    started = time.time()
    return stamped([train_baseline(data, seed)], started)[0]


@task(name="export-image-model", **LOCAL)
def export(trained: TrainedImageModel, data: ImageSplit, settings: Settings) -> ImageCandidate:
    """ONNX with the preprocessing inside, parity on the test images, the int8 variant measured."""
    return ImageCandidate(trained, export_image_model(trained, data, settings.parity_tolerance,
                                                      settings.quantization_max_delta))


@task(name="log-training-run", **REMOTE)
def log_run(settings: Settings, release_id: str, candidate: ImageCandidate, data: ImageSplit, parent_run_id: str) -> str:
    q = candidate.exported.quantized
    params = {**candidate.trained.params, "int8_kept": q.kept}
    metrics = candidate.trained.metrics.as_dict() | {"validation_pr_auc": candidate.trained.validation_pr_auc}
    if q.pr_auc_delta is not None:
        metrics |= {"int8_pr_auc_delta": q.pr_auc_delta, "int8_max_abs_diff": float(q.max_abs_diff or 0.0)}
    t = candidate.trained
    return registry.log_training_run(settings, release_id, t.family, params, metrics, data.data_fingerprint,
                                     candidate.exported.parity_max_abs_diff, parent_run_id, (t.started_at, t.finished_at))


@task(name="register-candidate", **REMOTE)
def register(settings: Settings, run_id: str, champion: ImageCandidate, data: ImageSplit) -> registry.RegisteredVersion:
    """Register the champion and move @candidate to it (keyed by its training run)."""
    tags = version_tags(champion.trained.family, champion.exported.model, champion.exported.parity_max_abs_diff,
                        champion.trained.metrics, data.data_fingerprint, champion.exported.quantized.reason,
                        input_signature(image_spec(settings)))
    return registry.register_candidate(settings, run_id, champion.exported.model, tags)


@task(name="build-signed-bundle", **LOCAL)
def build_bundle(settings: Settings, version: registry.RegisteredVersion, champion: ImageCandidate, data: ImageSplit,
                 release_id: str) -> Path:
    """model.onnx (+ model.int8.onnx when kept) + bundle.json + signature; loaded as a site loads it."""
    key = bundles.signing_key(settings)
    spec = image_spec(settings)
    exported, trained = champion.exported, champion.trained
    manifest = bundles.build_image_manifest(
        name=version.name, version=version.version, family=trained.family, model=exported.model,
        int8_model=exported.quantized.model, shape=spec.image, limits=spec.limits, classes=data.classes,
        threshold=trained.metrics.threshold, metrics=trained.metrics.as_dict(), data_fingerprint=data.data_fingerprint,
        parity_max_abs_diff=exported.parity_max_abs_diff,
        reference=image_reference(exported.model, data.x_train, min(settings.reference_rows, 1000)))
    folder = settings.home / "work" / release_id / f"bundle-v{version.version}"
    bundles.write_bundle(folder, manifest, exported.model, exported.quantized.model, key)
    public = key.public_key()
    load_model(folder, {key_id(public): public})  # what every site does first: a bundle no site loads stops here
    return folder


@task(name="quality-gate", **REMOTE)
def quality_gate(settings: Settings, version: registry.RegisteredVersion, champion: ImageCandidate,
                 data: ImageSplit) -> GateDecision:
    """Challenger vs the baseline version (@production, else @staging) on this release's test images."""
    defective = data.defective(data.y_test)
    return gate_against_baseline(settings, version, champion.trained.metrics.pr_auc,
                                 lambda model: evaluate(defective, 1 - onnx_predict(model, data.x_test)[0][:, 0],
                                                        0.5).pr_auc)


def summary_markdown(release_id: str, version: registry.RegisteredVersion, candidates: list[ImageCandidate],
                     champion: ImageCandidate, decision: GateDecision, url: str, link: str, data: ImageSplit) -> str:
    """The image release as the Prefect UI shows it."""
    rows = "\n".join(
        f"| {c.trained.family}{' (champion)' if c is champion else ''} | {c.trained.validation_pr_auc:.4f} | "
        f"{c.trained.metrics.pr_auc:.4f} | {c.trained.metrics.f1:.4f} | {c.trained.metrics.recall:.4f} | "
        f"{c.exported.parity_max_abs_diff:.2e} | {c.exported.quantized.reason} |" for c in candidates)
    counts = np.bincount(np.concatenate([data.y_train, data.y_val, data.y_test]), minlength=len(data.classes))
    verdict = "PASSED → @staging" if decision.passed else "REJECTED (stays @candidate)"
    return (
        f"# Release {release_id}: {version.name} v{version.version} (images)\n\n"
        f"Images per class: {', '.join(f'{c} {n}' for c, n in zip(data.classes, counts.tolist(), strict=True))}; "
        f"test split {len(data.y_test)} images.\n\n"
        "| model | validation PR-AUC | test PR-AUC | F1 | recall | ONNX parity (max abs) | int8 |\n"
        "|---|---|---|---|---|---|---|\n"
        f"{rows}\n\n**Quality gate:** {verdict}: {decision.reason}\n\n"
        f"**Bundle:** `{url}`\n\n**MLflow:** {markdown_link('training run', link)}\n")


@task(name="publish-summary", **REMOTE)
def publish_summary(settings: Settings, release_id: str, version: registry.RegisteredVersion,
                    candidates: list[ImageCandidate], champion: ImageCandidate, decision: GateDecision, url: str,
                    data: ImageSplit) -> str:
    from prefect.artifacts import create_markdown_artifact

    markdown = summary_markdown(release_id, version, candidates, champion, decision, url,
                                registry.run_link(settings, version.run_id), data)
    create_markdown_artifact(markdown, key=f"release-{version.name}".lower().replace("_", "-"),
                             description=f"release {release_id}")
    return markdown
