"""Thin Prefect tasks of the release flow over the plain functions in this package.

Everything that talks to MLflow or the bundle store retries with backoff; every side effect
has `cache_policy=NONE` and is keyed (release id, training run, model version) so a retry or
a re-run never registers or uploads twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import task

from edgewave.serving.bundle import key_id
from edgewave.serving.model import load_model
from edgewave.serving.redact import redact
from edgewave.tasks.data.ai4i import FEATURES, TARGET
from edgewave.tasks.data.images import ImageSpec
from edgewave.tasks.data.machines import simulate
from edgewave.tasks.data.spec import DatasetSpec, load_any_spec, load_spec
from edgewave.tasks.data.userdata import load_user_data
from edgewave.tasks.platform.monitoring import MonitoringStore
from edgewave.tasks.platform.runs import (
    LOCAL,
    REMOTE,
    describe_deployment,
    markdown_link,
    prefect_run_url,
    run_logger,
)
from edgewave.tasks.platform.settings import Settings
from edgewave.tasks.release import bundle as bundles
from edgewave.tasks.release import registry
from edgewave.tasks.release.export import Export, export_model, onnx_proba
from edgewave.tasks.release.features import Features
from edgewave.tasks.release.gate import GateDecision, judge
from edgewave.tasks.release.train import (
    Metrics,
    Split,
    TrainedModel,
    candidates,
    evaluate,
    search_trees,
    split_data,
    stamped,
    train_torch,
)


@dataclass(frozen=True)
class Candidate:
    trained: TrainedModel
    exported: Export


@task(name="load-training-data", **LOCAL)
def load_training_data(settings: Settings, seed: int, shuffle_labels: bool = False,
                       with_feedback: bool = False) -> pd.DataFrame:
    """The user's data set when configured, else AI4I-style generated data; plus the sites'
    labelled feedback when retraining.

    `shuffle_labels` breaks the link between inputs and target on purpose: the model learns
    nothing, which is how the rollback demo makes a model the canary must catch.
    """
    spec = load_spec(settings.dataset)
    if settings.data_path is not None:
        frame = load_user_data(settings.data_path, spec)
    else:
        try:
            frame = simulate(spec, settings.train_rows, seed)
        except ValueError as exc:
            raise ValueError(f"{settings.dataset}: {exc}") from None
    if with_feedback:
        feedback = MonitoringStore.of(settings).read_feedback(settings.feedback_rows_per_site)
        run_logger().info("retraining with %d labelled rows of site feedback (store %s) + %d base rows",
                          len(feedback), redact(settings.monitoring_store), len(frame))
        frame = add_feedback(frame, feedback, [*spec.features, spec.target.name])
    if shuffle_labels:
        target = spec.target.name
        frame = frame.assign(**{target: np.random.default_rng(seed).permutation(frame[target].to_numpy())})
    return frame


def add_feedback(frame: pd.DataFrame, feedback: pd.DataFrame, columns: list[str] | None = None) -> pd.DataFrame:
    """Training rows plus labelled site rows; feedback missing a column is refused by name."""
    if feedback.empty:
        return frame
    columns = columns or [*FEATURES, TARGET]
    missing = [c for c in columns if c not in feedback.columns]
    if missing:
        raise ValueError(f"feedback rows lack columns {missing} (have {list(feedback.columns)})")
    return pd.concat([frame[columns], feedback[columns].astype(frame[columns].dtypes.to_dict())], ignore_index=True)


@task(name="split-data", **LOCAL)
def split(settings: Settings, frame: pd.DataFrame, seed: int) -> Split:
    """Train / validation / test of the spec's raw columns; the models see its derived features too."""
    spec = load_spec(settings.dataset)
    return split_data(frame, seed, Features.of(spec), spec.target.name)


@task(name="train-trees", **LOCAL)
def fit_trees(data: Split, seed: int, budget: int = 4) -> list[TrainedModel]:
    """The tree ensembles of a bounded search (EDGEWAVE_SEARCH_BUDGET trials), each scored on validation
    (each stamped with the whole search's span: the search made the one that is kept)."""
    started = time.time()
    return stamped(search_trees(data, seed, budget), started)


@task(name="train-torch", **LOCAL)
def fit_torch(data: Split, seed: int) -> TrainedModel:
    started = time.time()
    return stamped([train_torch(data, seed)], started)[0]


@task(name="blend-models", **LOCAL)
def choose(data: Split, trees: list[TrainedModel], mlp: TrainedModel) -> list[TrainedModel]:
    """The best tree ensemble, the MLP, and their blend when it beats both on validation."""
    started = time.time()
    return stamped(candidates(trees, mlp, data), started)


@task(name="start-release-run", **REMOTE)
def start_release_run(settings: Settings, release_id: str, started_at: float) -> str:
    """The release's parent run in MLflow, linked to this Prefect run; the trials are its children."""
    return registry.release_run(settings, release_id, started_at, prefect_run_url())


@task(name="link-version", **REMOTE)
def link_version(settings: Settings, version: registry.RegisteredVersion, release_run_id: str) -> None:
    """The version's page says which release made it: the Prefect run (a tag and a link in its
    description) and the release's MLflow run."""
    url = prefect_run_url()
    if url:
        registry.tag_version(settings, version.version, {registry.PREFECT_RUN_TAG: url})
    made_by = " · ".join(filter(None, [f"[Prefect run]({url})" if url else "",
                                       markdown_link("MLflow release run", registry.run_link(settings, release_run_id))]))
    registry.describe_version(settings, version.version, "Release", made_by)


@task(name="end-release-run", **REMOTE)
def end_release_run(settings: Settings, run_id: str, status: str = "FINISHED") -> None:
    registry.end_release_run(settings, run_id, status)


@task(name="export-onnx", **LOCAL)
def export(trained: TrainedModel, data: Split, settings: Settings) -> Candidate:
    """ONNX export with parity on the held-out split; fails with the difference if above tolerance."""
    return Candidate(trained, export_model(trained, data.x_test, data.y_test, settings.parity_tolerance,
                                           settings.quantization_max_delta, data.features))


@task(name="log-training-run", **REMOTE)
def log_run(settings: Settings, release_id: str, candidate: Candidate, data: Split, parent_run_id: str) -> str:
    t = candidate.trained
    params = {**t.params, "int8_kept": candidate.exported.quantized.kept}
    metrics = t.metrics.as_dict()
    if candidate.exported.quantized.pr_auc_delta is not None:
        metrics["int8_pr_auc_delta"] = candidate.exported.quantized.pr_auc_delta
        metrics["int8_max_abs_diff"] = float(candidate.exported.quantized.max_abs_diff or 0.0)
    return registry.log_training_run(settings, release_id, t.family, params, metrics, data.data_fingerprint,
                                     candidate.exported.parity_max_abs_diff, parent_run_id, (t.started_at, t.finished_at))


@task(name="check-model-inputs", **REMOTE)
def check_model_inputs(settings: Settings) -> None:
    """Fail before training, not at the gate, when the model name's baseline takes other inputs
    than this dataset has: one registered model serves one kind of machine (or one camera)."""
    spec = load_any_spec(settings.dataset)
    baseline = registry.baseline_version(settings, exclude=0)
    if baseline is None:
        return
    alias, version = baseline
    known, signature = version.tags.get(registry.INPUT_FEATURES), input_signature(spec)
    if known is not None and known != signature:
        raise ValueError(f"{settings.model_name} @{alias} (v{version.version}) takes {_shown(known)}, but the "
                         f"dataset {spec.name!r} ({settings.dataset}) has {_shown(signature)}: a registered model "
                         "serves one kind of machine; set EDGEWAVE_MODEL_NAME to another name for this dataset")


def input_signature(spec: DatasetSpec | ImageSpec) -> str:
    """What a registered version takes, as its `input_features` tag: a table's raw columns in graph
    order; an image model's size, channels and classes."""
    if isinstance(spec, ImageSpec):
        shape = spec.image
        return f"image:{shape.width}x{shape.height}x{shape.channels}:{'|'.join((spec.ok_class, *spec.defect_classes))}"
    return ",".join(spec.features)


def _shown(signature: str) -> str:
    return signature if signature.startswith("image:") else str(signature.split(","))


@task(name="register-candidate", **REMOTE)
def register(settings: Settings, run_id: str, champion: Candidate, data: Split) -> registry.RegisteredVersion:
    """Register the champion and move @candidate to it (keyed by its training run)."""
    tags = version_tags(champion.trained.family, champion.exported.model, champion.exported.parity_max_abs_diff,
                        champion.trained.metrics, data.data_fingerprint, champion.exported.quantized.reason,
                        ",".join(data.features.raw))
    return registry.register_candidate(settings, run_id, champion.exported.model, tags)


def version_tags(family: str, model: bytes, parity_max_abs_diff: float, m: Metrics, data_fingerprint: str,
                 int8: str, inputs: str) -> dict[str, str]:
    """The tags a registered version carries, whatever it takes (rows or images): what `status`, the
    rollout (onnx_sha256) and the next release's input check (input_features) read."""
    return {
        "family": family,
        "onnx_sha256": hashlib.sha256(model).hexdigest(),
        "parity_max_abs_diff": f"{parity_max_abs_diff:.3g}",
        "metrics": json.dumps({"pr_auc": round(m.pr_auc, 4), "f1": round(m.f1, 4), "recall": round(m.recall, 4)}),
        "threshold": f"{m.threshold:.6g}",
        "data_fingerprint": data_fingerprint,
        "int8": int8,
        registry.INPUT_FEATURES: inputs,
    }


@task(name="build-signed-bundle", **LOCAL)
def build_bundle(settings: Settings, version: registry.RegisteredVersion, champion: Candidate, data: Split,
                 release_id: str) -> Path:
    """model.onnx + bundle.json + ed25519 signature, written under EDGEWAVE_HOME/work."""
    key = bundles.signing_key(settings)
    spec = load_spec(settings.dataset)
    manifest = bundles.build_manifest(
        name=version.name, version=version.version, family=champion.trained.family,
        model=champion.exported.model, int8_model=champion.exported.quantized.model,
        train_frame=data.train_frame, threshold=champion.trained.metrics.threshold,
        metrics=champion.trained.metrics.as_dict(), data_fingerprint=data.data_fingerprint,
        parity_max_abs_diff=champion.exported.parity_max_abs_diff, reference_rows=settings.reference_rows,
        features=data.features.raw, class_labels=spec.class_labels, physical=spec.physical_ranges(),
    )
    folder = settings.home / "work" / release_id / f"bundle-v{version.version}"
    bundles.write_bundle(folder, manifest, champion.exported.model, champion.exported.quantized.model, key)
    public = key.public_key()
    load_model(folder, {key_id(public): public})  # what every site does first: a bundle no site loads stops here
    return folder


@task(name="store-bundle", **REMOTE)
def store_bundle(settings: Settings, version: registry.RegisteredVersion, folder: Path) -> str:
    """Upload to the bundle store and record it on the version (same URL on every retry); with
    EDGEWAVE_BUNDLE_REGISTRY also push it as an OCI artifact, which is then what sites pull (by digest)."""
    url = bundles.upload_bundle(folder, bundles.bundle_url(settings.bundle_store, version.name, version.version))
    registry.attach_bundle(settings, version, folder, url)
    if settings.bundle_registry:
        ref = bundles.push_artifact(settings, folder, version.name, version.version)
        registry.tag_version(settings, version.version, {"bundle_ref": ref})
        run_logger().info("bundle v%d pushed as %s", version.version, ref)
        return ref
    return url


@task(name="build-serving-image", **LOCAL)
def build_image(settings: Settings, version: registry.RegisteredVersion, folder: Path, staged: bool):
    """The serving image with this version baked in, pushed, its digest on the version.

    Without a reachable engine the build context is still written and the step ends in a
    state named Skipped (or fails, with EDGEWAVE_IMAGE_REQUIRED) saying why.
    """

    from prefect.artifacts import create_markdown_artifact
    from prefect.states import Completed

    from edgewave.tasks.platform import engine
    from edgewave.tasks.release import image as images

    if not staged:
        return Completed(name="Skipped", message=f"v{version.version} is not @staging: no image")
    docker_host = engine.configured_host(settings)
    manifest = json.loads((folder / "bundle.json").read_text())
    outcome = images.release_image(docker_host, settings.image_registry, settings.image_base, settings.home / "images",
                                   bundles.trusted_public_keys(settings), folder, version.name, version.version,
                                   manifest["model"]["sha256"])
    create_markdown_artifact(
        f"# Serving image of {version.name} v{version.version}: {outcome.status}\n\n{outcome.reason}\n\n"
        f"- tag: `{outcome.tag}`\n- digest: `{outcome.digest_ref or '-'}`\n- build context: `{outcome.context}`",
        key=f"image-{version.name}".lower().replace("_", "-"), description=f"serving image v{version.version}")
    if outcome.status == "skipped":
        run_logger().warning("serving image of v%d skipped: %s", version.version, outcome.reason)
        if settings.image_required:
            raise RuntimeError(f"serving image of v{version.version} required but skipped: {outcome.reason}")
        return Completed(name="Skipped", message=outcome.reason, data=outcome)
    if outcome.digest_ref is None:  # a pushed image always has one: sites pull by digest
        raise RuntimeError(f"serving image of v{version.version} was pushed without a digest: {outcome.reason}")
    registry.tag_version(settings, version.version, {"image": outcome.digest_ref, "image_tag": outcome.tag,
                                                     "image_size_bytes": str(outcome.size_bytes)})
    run_logger().info("serving image %s (%s)", outcome.digest_ref, outcome.reason)
    return outcome


@task(name="quality-gate", **REMOTE)
def quality_gate(settings: Settings, version: registry.RegisteredVersion, champion: Candidate,
                 data: Split) -> GateDecision:
    """Challenger vs the baseline version (@production, else @staging) on this held-out split."""
    return gate_against_baseline(settings, version, champion.trained.metrics.pr_auc,
                                 lambda model: evaluate(data.y_test, onnx_proba(model, data.x_test), 0.5).pr_auc)


def gate_against_baseline(settings: Settings, version: registry.RegisteredVersion, challenger_pr_auc: float,
                          baseline_pr_auc: Callable[[bytes], float]) -> GateDecision:
    """The gate's decision: the baseline version's ONNX graph (@production, else @staging) scored by
    `baseline_pr_auc` on the challenger's held-out data, or the floor when there is none."""
    baseline = registry.baseline_version(settings, exclude=version.version)
    scored = None
    if baseline is not None:
        alias, base = baseline
        scored = (alias, int(base.version), baseline_pr_auc(registry.download_onnx(settings, base)))
    return judge(challenger_pr_auc, scored, settings.gate_tolerance, settings.gate_floor_pr_auc)


@task(name="record-gate", **REMOTE)
def record_gate(settings: Settings, version: registry.RegisteredVersion, decision: GateDecision,
                force: bool = False) -> None:
    """Tag the decision on the version; @staging moves only on a pass, or when forced (tagged so)."""
    tags = {**decision.as_tags(), **({"gate.forced": "True"} if force and not decision.passed else {})}
    registry.record_gate(settings, version, tags, decision.passed or force)
    verdict = "PASSED → @staging" if decision.passed else "REJECTED, FORCED to @staging" if force else "REJECTED"
    registry.describe_version(settings, version.version, "Gate", f"{verdict}: {decision.reason}")


def form_notes(staging: int | None, production: int | None, previous: int | None) -> tuple[str, str]:
    """What the rollout and the rollback deployments' pages say holds now, so a person starting either
    from the Prefect UI sees which version is which without opening MLflow."""
    def v(alias: str, version: int | None) -> str:
        return f"@{alias} v{version}" if version is not None else f"no @{alias}"

    if staging is not None and staging == production:
        rollout = f"{v('staging', staging)} is already @production: nothing new to roll out ({v('previous', previous)})."
    else:
        rollout = (f"{v('staging', staging)}, {v('production', production)}, {v('previous', previous)}."
                   + (" The form offers @staging." if staging is not None else ""))
    rollback = (f"{v('production', production)}; an empty `to` returns the fleet to {v('previous', previous)}."
                if previous is not None else f"{v('production', production)}; no @previous: name a version in `to`.")
    return rollout, rollback


@task(name="show-versions-on-forms", **LOCAL)
def show_versions_on_forms(settings: Settings) -> None:
    """After @staging or @production moved: the rollout and rollback deployments name the versions as
    they now stand, and the rollout form offers @staging. A label, not a step: a failure only warns."""
    try:
        staging, production, previous = (registry.alias_version(settings, alias)
                                         for alias in (registry.STAGING, registry.PRODUCTION, registry.PREVIOUS))
        rollout, rollback = form_notes(staging, production, previous)
        describe_deployment("rollout/rollout", rollout, "version", {"version": staging} if staging is not None else None)
        describe_deployment("rollback/rollback", rollback, "to")
    except Exception as exc:  # noqa: BLE001 - see the docstring
        run_logger().warning("could not name the versions on the rollout forms: %s", exc)


def draw_seed(settings: Settings) -> int:
    return settings.data_seed if settings.data_seed is not None else int(np.random.SeedSequence().generate_state(1)[0] % 2**31)


def summary_markdown(release_id: str, version: registry.RegisteredVersion, candidates: list[Candidate],
                     champion: Candidate, decision: GateDecision, url: str, link: str,
                     versions: dict[str, str] | None = None) -> str:
    """The release as the Prefect UI shows it; `link` the training run, `versions` the model
    version pages (label → URL) when MLflow is a server."""
    versions = versions or {}
    rows = "\n".join(
        f"| {c.trained.family}{' (champion)' if c is champion else ''} | {c.trained.metrics.pr_auc:.4f} | "
        f"{c.trained.metrics.f1:.4f} | {c.trained.metrics.recall:.4f} | {c.exported.parity_max_abs_diff:.2e} | "
        f"{c.exported.quantized.reason} |"
        for c in candidates
    )
    verdict = "PASSED → @staging" if decision.passed else "REJECTED (stays @candidate)"
    return (
        f"# Release {release_id}: {version.name} v{version.version}\n\n"
        "| model | PR-AUC | F1 | recall | ONNX parity (max abs) | int8 |\n|---|---|---|---|---|---|\n"
        f"{rows}\n\n**Quality gate:** {verdict}: {decision.reason}\n\n"
        f"**Bundle:** `{url}`\n\n**MLflow:** {markdown_link('training run', link)}"
        + "".join(f" · [model version {label}]({page})" for label, page in versions.items()) + "\n"
    )


@task(name="publish-summary", **REMOTE)
def publish_summary(settings: Settings, release_id: str, version: registry.RegisteredVersion,
                    candidates: list[Candidate], champion: Candidate, decision: GateDecision, url: str) -> str:
    """A markdown artifact in Prefect with metrics, parity, the gate decision and the run link."""
    from prefect.artifacts import create_markdown_artifact

    markdown = summary_markdown(release_id, version, candidates, champion, decision, url,
                                registry.run_link(settings, version.run_id),
                                registry.ui_links(settings, **{f"v{version.version}": version.version}))
    create_markdown_artifact(markdown, key=f"release-{version.name}".lower().replace("_", "-"),
                             description=f"release {release_id}")
    return markdown
