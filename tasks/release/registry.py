"""MLflow tracking and registry: runs, versions, aliases and tags.

Aliases only, never stages: @candidate on register, @staging after the gate, @production and
@previous set by the rollout. Every writer here is idempotent so a Prefect retry after a
half-done call does not create a second run or version.
"""

from __future__ import annotations

import functools
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, TypeVar

import mlflow
import mlflow.artifacts
import mlflow.onnx as mlflow_onnx
import onnx
import onnxruntime
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from edgewave.serving.errors import Actionable
from edgewave.serving.redact import redact
from edgewave.tasks.platform.settings import Settings

CANDIDATE, STAGING, PRODUCTION, PREVIOUS = "candidate", "staging", "production", "previous"
BASELINE_ALIASES = (PRODUCTION, STAGING)
RELEASE_TAG = "edgewave.release_id"
INPUT_FEATURES = "input_features"  # the raw columns a version takes, comma-separated, in graph order


class RegistryUnavailable(RuntimeError, Actionable):
    """The registry failed for another reason than "no such model, version or alias": fail, never guess."""


def _absent(exc: MlflowException) -> bool:
    """Only this means absent; a 5xx, an auth error or a timeout does not."""
    return exc.error_code == "RESOURCE_DOES_NOT_EXIST" or (
        exc.error_code == "INVALID_PARAMETER_VALUE" and "not found" in exc.message)


def _unavailable(settings: Settings, what: str, exc: MlflowException) -> RegistryUnavailable:
    return RegistryUnavailable(f"MLflow at {redact(settings.mlflow_tracking_uri)}: {what} failed "
                               f"({exc.error_code}): {redact(exc.message)[:300]}")


P = ParamSpec("P")
R = TypeVar("R")


def speaks_to_registry(what: str) -> Callable[[Callable[Concatenate[Settings, P], R]],
                                             Callable[Concatenate[Settings, P], R]]:
    """Any MLflow error a call lets through (refused connection, 5xx, timeout, a refused request)
    becomes RegistryUnavailable naming the server and `what`: the command ends in one line a person
    acts on, whichever call of a step met the outage first. "Absent" is decided inside the call."""
    def wrap(call: Callable[Concatenate[Settings, P], R]) -> Callable[Concatenate[Settings, P], R]:
        @functools.wraps(call)
        def guarded(settings: Settings, *args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return call(settings, *args, **kwargs)
            except MlflowException as exc:
                raise _unavailable(settings, what, exc) from None
        return guarded
    return wrap


def check_reachable(settings: Settings, timeout: float = 3.0) -> None:
    """Raise RegistryUnavailable at once when an MLflow server does not answer its health check
    (its client would retry each call for minutes); an embedded sqlite registry always answers."""
    import urllib.request

    uri = settings.mlflow_tracking_uri
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as response:
            if response.status == 200:
                return
            problem = f"answers {response.status}"
    except (OSError, ValueError) as exc:  # ValueError: a URL urllib cannot open (credentials in it, say)
        problem = f"does not answer ({redact(str(getattr(exc, 'reason', exc)))})"
    raise RegistryUnavailable(f"MLflow at {redact(uri)} {problem}: start it (`make up`) or set "
                              "EDGEWAVE_TRACKING_URI to a running server")


@dataclass(frozen=True)
class RegisteredVersion:
    name: str
    version: int
    run_id: str


def client(settings: Settings) -> MlflowClient:
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    return MlflowClient(settings.mlflow_tracking_uri)


@speaks_to_registry("finding the release experiment")
def ensure_experiment(settings: Settings, name: str | None = None) -> str:
    """The release experiment (or `name`); embedded artifacts go under EDGEWAVE_HOME, never the cwd."""
    mlc = client(settings)
    name = name or settings.experiment_name
    experiment = mlc.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None if settings.uses_tracking_server else f"{settings.artifact_root.as_uri()}/{name}"
    try:
        return mlc.create_experiment(name, artifact_location=location)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # an outage is not "created meanwhile"
            raise
        experiment = mlc.get_experiment_by_name(name)  # created meanwhile by a concurrent or retried call
        if experiment is None:
            raise
        return experiment.experiment_id


PREFECT_RUN_TAG = "prefect.run_url"  # the Prefect flow run that made an MLflow run or version


@speaks_to_registry("starting the release's MLflow run")
def release_run(settings: Settings, release_id: str, started_at: float, prefect_run: str | None) -> str:
    """The release's parent MLflow run (its trials are children), from the release's start; the existing
    one on a retry."""
    mlc = client(settings)
    experiment_id = ensure_experiment(settings)
    existing = mlc.search_runs([experiment_id], f"tags.`{RELEASE_TAG}` = '{release_id}' and "
                                                "tags.`edgewave.role` = 'release'")
    if existing:
        return existing[0].info.run_id
    tags = {RELEASE_TAG: release_id, "edgewave.role": "release", **({PREFECT_RUN_TAG: prefect_run} if prefect_run else {})}
    return mlc.create_run(experiment_id, start_time=int(started_at * 1000), run_name=release_id, tags=tags).info.run_id


@speaks_to_registry("ending the release's MLflow run")
def end_release_run(settings: Settings, run_id: str, status: str = "FINISHED") -> None:
    client(settings).set_terminated(run_id, status)


@speaks_to_registry("logging the training run")
def log_training_run(settings: Settings, release_id: str, family: str, params: dict[str, Any],
                     metrics: dict[str, float], data_fingerprint: str, parity_max_abs_diff: float,
                     parent_run_id: str | None = None, span: tuple[float, float] | None = None) -> str:
    """One MLflow run per trained candidate, a child of the release's run, spanning its training (epoch
    seconds `span`); returns the existing run on a retry."""
    mlc = client(settings)
    experiment_id = ensure_experiment(settings)
    existing = mlc.search_runs(
        [experiment_id], f"tags.`{RELEASE_TAG}` = '{release_id}' and tags.`edgewave.family` = '{family}'"
    )
    if existing:
        return existing[0].info.run_id
    tags = {RELEASE_TAG: release_id, "edgewave.family": family, "data_fingerprint": data_fingerprint,
            **({"mlflow.parentRunId": parent_run_id} if parent_run_id else {})}
    started, ended = (int(t * 1000) for t in span) if span and span[0] else (None, None)
    run = mlc.create_run(experiment_id, start_time=started, run_name=f"{release_id}-{family}", tags=tags)
    run_id = run.info.run_id
    mlc.log_batch(
        run_id,
        metrics=[Metric(k, float(v), 0, 0) for k, v in {**metrics, "parity_max_abs_diff": parity_max_abs_diff}.items()],
        params=[Param(k, json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()],
    )
    mlc.set_terminated(run_id, end_time=ended)
    return run_id


def _version_for_run(mlc: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    """The version a retry registered already; an error here must not register a second one."""
    versions = mlc.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    return versions[0] if versions else None


@speaks_to_registry("registering the candidate")
def register_candidate(settings: Settings, run_id: str, model: bytes, tags: dict[str, str]) -> RegisteredVersion:
    """Log the ONNX model to the run, register it, tag it and point @candidate at it.

    Keyed by the run: a retry finds the version registered by the first attempt.
    """
    mlc = client(settings)
    name = settings.model_name
    version = _version_for_run(mlc, name, run_id)
    if version is None:
        trained_until = mlc.get_run(run_id).info.end_time  # logging the model reopens the run: keep its span
        with mlflow.start_run(run_id=run_id):
            info = mlflow_onnx.log_model(
                onnx.load_from_string(model),
                name="model",
                pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={onnxruntime.__version__}"],
                save_as_external_data=False,
            )
        mlc.set_terminated(run_id, end_time=trained_until)
        try:
            mlc.create_registered_model(name)
        except MlflowException as exc:
            if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
                raise
        version = mlc.create_model_version(name, info.model_uri, run_id=run_id, model_id=info.model_id)
    number = int(version.version)
    for key, value in tags.items():
        mlc.set_model_version_tag(name, str(number), key, value)
    mlc.set_registered_model_alias(name, CANDIDATE, str(number))
    return RegisteredVersion(name, number, run_id)


@speaks_to_registry("attaching the bundle")
def attach_bundle(settings: Settings, registered: RegisteredVersion, folder: Path, url: str) -> None:
    """Log the signed bundle as run artifacts and record where the edge fetches it."""
    mlc = client(settings)
    mlc.log_artifacts(registered.run_id, str(folder), artifact_path="bundle")
    mlc.set_model_version_tag(registered.name, str(registered.version), "bundle_url", url)


@speaks_to_registry("reading the baseline version")
def baseline_version(settings: Settings, exclude: int) -> tuple[str, ModelVersion] | None:
    """The version a challenger must not be worse than: @production, else @staging."""
    mlc = client(settings)
    for alias in BASELINE_ALIASES:
        try:
            version = mlc.get_model_version_by_alias(settings.model_name, alias)
        except MlflowException as exc:
            if _absent(exc):
                continue
            raise _unavailable(settings, f"reading @{alias} of {settings.model_name}", exc) from None
        if int(version.version) != exclude:
            return alias, version
    return None


@speaks_to_registry("downloading a version's ONNX model")
def download_onnx(settings: Settings, version: ModelVersion) -> bytes:
    """The ONNX graph of a registered version, as logged by `register_candidate`."""
    client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=version.source, dst_path=tmp))
        found = sorted(local.rglob("*.onnx"))
        if not found:
            raise FileNotFoundError(f"model version {version.version}: no .onnx file under {version.source}")
        return found[0].read_bytes()


@speaks_to_registry("recording the gate decision")
def record_gate(settings: Settings, registered: RegisteredVersion, tags: dict[str, str], passed: bool) -> None:
    """Tag the decision on the version; move @staging only when it passed."""
    mlc = client(settings)
    for key, value in tags.items():
        mlc.set_model_version_tag(registered.name, str(registered.version), key, value)
    if passed:
        mlc.set_registered_model_alias(registered.name, STAGING, str(registered.version))


@speaks_to_registry("reading the registry")
def registry_state(settings: Settings) -> dict[str, Any]:
    """Model name, aliases and every version with its tags: what `edgewave status` prints."""
    mlc = client(settings)
    name = settings.model_name
    try:
        model = mlc.get_registered_model(name)
    except MlflowException as exc:
        if not _absent(exc):
            raise _unavailable(settings, f"reading {name}", exc) from None
        return {"model": name, "tracking_uri": redact(settings.mlflow_tracking_uri), "aliases": {}, "versions": []}
    versions = sorted(mlc.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
    by_version: dict[int, list[str]] = {}
    for alias, number in model.aliases.items():  # search results do not carry aliases
        by_version.setdefault(int(number), []).append(alias)
    return {
        "model": name,
        "tracking_uri": redact(settings.mlflow_tracking_uri),
        "aliases": {alias: int(v) for alias, v in sorted(model.aliases.items())},
        "versions": [
            {
                "version": int(v.version),
                "aliases": sorted(by_version.get(int(v.version), [])),
                "run_id": v.run_id,
                "created": v.creation_timestamp,
                "tags": dict(sorted(v.tags.items())),
                "description": v.description or "",
            }
            for v in versions
        ],
    }


@speaks_to_registry("reading a run")
def run_link(settings: Settings, run_id: str, experiment_id: str | None = None) -> str:
    """Where a person opens an MLflow run: the server UI, or the command to browse SQLite."""
    if settings.uses_tracking_server:
        experiment_id = experiment_id or client(settings).get_run(run_id).info.experiment_id
        return f"{_ui(settings)}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"run {run_id} (browse: mlflow ui --backend-store-uri {settings.mlflow_tracking_uri})"


def _ui(settings: Settings) -> str | None:
    """The MLflow UI a browser opens: the tracking server; embedded SQLite has no pages."""
    return settings.mlflow_tracking_uri.rstrip("/") if settings.uses_tracking_server else None


def ui_links(settings: Settings, **versions: int | None) -> dict[str, str]:
    """MLflow UI pages of model versions, by label (`ui_links(s, **{"v3": 3})`), when MLflow is a server."""
    base = _ui(settings)
    if base is None:
        return {}
    return {label: f"{base}/#/models/{settings.model_name}/versions/{v}" for label, v in versions.items() if v}


def artifact_link(settings: Settings, run_id: str, experiment_id: str, path: str) -> str | None:
    """The MLflow UI page showing one artifact of a run (a drift report), when MLflow is a server."""
    base = _ui(settings)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{path}" if base else None


@speaks_to_registry("reading an alias")
def alias_version(settings: Settings, alias: str) -> int | None:
    """The version @alias points at; None only when the model or the alias does not exist."""
    try:
        return int(client(settings).get_model_version_by_alias(settings.model_name, alias).version)
    except MlflowException as exc:
        if _absent(exc):
            return None
        raise _unavailable(settings, f"reading @{alias} of {settings.model_name}", exc) from None


@speaks_to_registry("reading a version's bundle")
def rollout_target(settings: Settings, version: int) -> tuple[str, str]:
    """(where sites get the bundle, model.onnx sha256) of a registered version, as the release tagged them:
    the OCI artifact by digest when one was pushed, else the bundle store URL."""
    try:
        tags = client(settings).get_model_version(settings.model_name, str(version)).tags
    except MlflowException as exc:
        if not _absent(exc):
            raise _unavailable(settings, f"reading {settings.model_name} v{version}", exc) from None
        raise LookupError(f"{settings.model_name} v{version} is not registered "
                          f"({redact(settings.mlflow_tracking_uri)})") from None
    missing = [t for t in ("bundle_url", "onnx_sha256") if t not in tags]
    if missing:
        raise LookupError(f"{settings.model_name} v{version} lacks the tag(s) {missing}; was it released by edgewave?")
    return tags.get("bundle_ref") or tags["bundle_url"], tags["onnx_sha256"]


@speaks_to_registry("finding the newest serving image")
def newest_image(settings: Settings) -> str | None:
    """The serving image of the newest version that has one (what container sites run)."""
    versions = client(settings).search_model_versions(f"name='{settings.model_name}'")
    for version in sorted(versions, key=lambda v: -int(v.version)):
        if version.tags.get("image"):
            return version.tags["image"]
    return None


@speaks_to_registry("reading a version's serving image")
def serving_image(settings: Settings, version: int) -> str | None:
    """The serving image with this version baked in (`image` tag, by digest), if one was built."""
    return client(settings).get_model_version(settings.model_name, str(version)).tags.get("image")


@speaks_to_registry("tagging a version")
def tag_version(settings: Settings, version: int, tags: dict[str, str]) -> None:
    mlc = client(settings)
    for key, value in tags.items():
        mlc.set_model_version_tag(settings.model_name, str(version), key, value)


def with_section(description: str, section: str, text: str) -> str:
    """A version's description with its `section` line (`**Gate**: …`, `**Rollout**: …`) set to `text`:
    the one thing MLflow shows on a version's page besides a wall of tags, kept to a line per subject."""
    line = f"**{section}**: {text}"
    kept = [existing for existing in description.splitlines() if not existing.startswith(f"**{section}**:")]
    return "\n\n".join([*(k for k in kept if k.strip()), line])


@speaks_to_registry("describing a version")
def describe_version(settings: Settings, version: int, section: str, text: str) -> None:
    """Set one section of the version's description (see `with_section`)."""
    mlc = client(settings)
    current = mlc.get_model_version(settings.model_name, str(version)).description or ""
    mlc.update_model_version(settings.model_name, str(version), description=with_section(current, section, text))


@speaks_to_registry("moving @production")
def promote(settings: Settings, version: int) -> int | None:
    """@production → `version`, @previous → the old production; returns the old one."""
    mlc = client(settings)
    old = alias_version(settings, PRODUCTION)
    if old is not None and old != version:
        mlc.set_registered_model_alias(settings.model_name, PREVIOUS, str(old))
    mlc.set_registered_model_alias(settings.model_name, PRODUCTION, str(version))
    return old
