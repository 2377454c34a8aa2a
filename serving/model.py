"""A verified, warmed-up ONNX model and the slot that swaps it atomically.

A request reads `slot.current` once and uses that model to the end, so a swap never changes
the model under a request in flight: it finishes on the old session while new requests get
the new one. Nothing replaces `current` before the new bundle has been verified, loaded,
warmed up on its reference rows and checked to give finite probabilities of the right shape.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import onnxruntime as ort
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgewave.serving.bundle import MODEL, BundleError, BundleManifest, ImageInput, verify_bundle

log = logging.getLogger("edgewave.serving")


ROUNDING = 1e-4  # float32 rounding a model may show at the edges of [0, 1]; beyond it the model is broken


class ModelLoadError(BundleError):
    """A verified bundle whose model does not load, warm up or give sane outputs."""


@dataclass(frozen=True)
class LoadedModel:
    manifest: BundleManifest
    session: ort.InferenceSession
    folder: Path
    feature_names: tuple[str, ...]
    mins: np.ndarray
    maxs: np.ndarray
    threshold: float
    labels: tuple[str, str]  # (negative, positive)
    min_bounds: tuple[float, ...]  # the same bounds as Python floats, for small batches
    max_bounds: tuple[float, ...]
    valid_mins: np.ndarray  # the physical range (FeatureSpec.valid_min/max; ±inf where the bundle has none)
    valid_maxs: np.ndarray
    valid_bounds: tuple[tuple[float, float], ...]  # the same as Python floats, for small batches
    image: ImageInput | None = None  # an image model: what it takes; `feature_names` are then what it ships back
    classes: tuple[str, ...] = ()  # an image model's classes, in its output's order

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def sha256(self) -> str:
        return self.manifest.model.sha256

    def failure_probability(self, x: np.ndarray) -> np.ndarray:
        """Clipped to [0, 1]: a tree ensemble's float32 sum of leaf values lands a few ulps outside
        (1.0000013 measured on a random forest); a client must never see that."""
        return np.clip(self.raw_probability(x), 0.0, 1.0)

    def raw_probability(self, x: np.ndarray) -> np.ndarray:
        (out,) = self.session.run([self.manifest.output.name], {self.manifest.input.name: x})
        return np.asarray(out)[:, self.manifest.output.positive_index]

    def score(self, x: np.ndarray) -> np.ndarray:
        """One ONNX call for a batch: a table model's failure probability per row; an image model's
        class probabilities and embedding side by side per image ([n, classes + embedding])."""
        if self.image is None:
            return self.failure_probability(x)
        output = self.manifest.output
        probabilities, embedding = self.session.run([output.name, output.embedding or ""], {self.image.name: x})
        return np.hstack([np.clip(np.asarray(probabilities), 0.0, 1.0), np.asarray(embedding)])


# ONNX Runtime moves the quantisation of a max-pool's output above the pool. Where the convolution
# before the pool stays in float (an int8 image model's first one), the pool then runs on uint8 in
# NCHW, a slow kernel: 400 µs for the pool alone, where the whole int8 model takes 330 µs with the
# pool in float (10 µs). Pooling in float and quantising after gives the same numbers: the max
# commutes with a monotonic quantisation. fp32 graphs have no quantisation to move.
DISABLED_OPTIMIZERS = ["QDQPropagationTransformer"]


def site_session(model: Path | bytes, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime session as a site runs it; benchmarks that measure "as the site" use it too.
    One thread by default: the site's event loop decodes and answers requests on another core while
    the model runs (`EDGEWAVE_INFERENCE_THREADS` gives the model more where the box has them)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"], disabled_optimizers=DISABLED_OPTIMIZERS)


def load_model(folder: Path, trusted: dict[str, Ed25519PublicKey], int8: bool = False, threads: int = 1) -> LoadedModel:
    """Verify, load, warm up and sanity-check a bundle; raise a `BundleError` on any failure. With
    `int8`, the bundle's int8 variant is served when it ships one (the release kept it only where its
    quality held; its hash is verified like the model's); `threads`: ONNX Runtime's per call."""
    manifest = verify_bundle(folder, trusted)
    graph = manifest.variants["int8"].path if int8 and "int8" in manifest.variants else MODEL
    try:
        session = site_session(folder / graph, threads)
    except Exception as exc:  # ORT raises its own exception types for a bad graph
        raise ModelLoadError(f"{folder}: {graph} does not load in ONNX Runtime: {exc}") from None
    if isinstance(manifest.input, ImageInput):
        return _image_model(folder, manifest, manifest.input, session)
    names = tuple(manifest.input.names)
    mins = np.array([f.min for f in manifest.input.features], dtype=np.float32)
    maxs = np.array([f.max for f in manifest.input.features], dtype=np.float32)
    positive = manifest.output.positive_index
    valid_mins = np.array([-np.inf if f.valid_min is None else f.valid_min for f in manifest.input.features])
    valid_maxs = np.array([np.inf if f.valid_max is None else f.valid_max for f in manifest.input.features])
    model = LoadedModel(
        manifest, session, folder, names, mins, maxs, manifest.threshold,
        (manifest.class_labels[1 - positive], manifest.class_labels[positive]),
        tuple(mins.tolist()), tuple(maxs.tolist()),
        valid_mins, valid_maxs, tuple(zip(valid_mins.tolist(), valid_maxs.tolist(), strict=True)),
    )
    columns = manifest.reference.columns
    missing = [n for n in names if n not in columns]
    if missing:
        raise ModelLoadError(f"{folder}: reference rows lack features {missing}; cannot warm up")
    warm = np.column_stack([np.asarray(columns[n][:256], dtype=np.float32) for n in names])
    try:
        proba = model.raw_probability(warm)
        single = model.raw_probability(warm[:1])
    except Exception as exc:
        raise ModelLoadError(f"{folder}: warm-up inference failed: {exc}") from None
    if proba.shape != (len(warm),) or single.shape != (1,):
        raise ModelLoadError(f"{folder}: warm-up gave shape {proba.shape}, expected ({len(warm)},)")
    if not np.all(np.isfinite(proba)) or proba.min() < -ROUNDING or proba.max() > 1 + ROUNDING:
        raise ModelLoadError(f"{folder}: warm-up gave probabilities outside [0, 1] or not finite "
                             f"(min {proba.min():.6g}, max {proba.max():.6g})")
    return model


def _image_model(folder: Path, manifest: BundleManifest, schema: ImageInput,
                 session: ort.InferenceSession) -> LoadedModel:
    """An image bundle, warmed up on a black, a mid-grey and a noisy image at the trained size: each
    must get one finite probability per class summing to 1 and a finite embedding."""
    from edgewave.serving.images import DESCRIPTORS, EMBEDDING_PREFIX

    classes = tuple(manifest.class_labels)
    if manifest.output.ok_index is None or manifest.output.ok_index >= len(classes) or not manifest.output.embedding:
        raise ModelLoadError(f"{folder}: an image bundle names the good class (output.ok_index) among its "
                             f"{len(classes)} class labels and its embedding output")
    none = np.zeros(0, dtype=np.float32)
    model = LoadedModel(manifest, session, folder, (), none, none, manifest.threshold,
                        (classes[manifest.output.ok_index], "defect"), (), (), none, none, (), schema, classes)
    shape = (schema.height, schema.width, schema.channels)
    warm = np.stack([np.zeros(shape, np.uint8), np.full(shape, 128, np.uint8),
                     np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)])
    try:
        scored = model.score(warm)
        model.score(warm[:1])
    except Exception as exc:
        raise ModelLoadError(f"{folder}: warm-up inference failed: {exc}") from None
    probabilities, embedding = scored[:, :len(classes)], scored[:, len(classes):]
    if (not np.all(np.isfinite(scored)) or embedding.shape[1] == 0
            or np.abs(probabilities.sum(axis=1) - 1).max() > 1e-3):
        raise ModelLoadError(f"{folder}: warm-up gave no finite class probabilities summing to 1 for "
                             f"{len(classes)} classes, or no finite embedding")
    names = (*DESCRIPTORS, *(f"{EMBEDDING_PREFIX}{i}" for i in range(embedding.shape[1])))
    return replace(model, feature_names=names)


class ModelSlot:
    """Holds the serving model; `swap` replaces it only with a model that passed every check."""

    def __init__(self, on_swap: Callable[[LoadedModel], None] | None = None,
                 on_failure: Callable[[str], None] | None = None, int8: bool = False, threads: int = 1) -> None:
        self.current: LoadedModel | None = None
        self._lock = threading.Lock()  # one swap at a time; readers never take it
        self._on_swap = on_swap
        self._on_failure = on_failure
        self.int8 = int8  # serve a bundle's int8 variant when it ships one
        self.threads = threads  # ONNX Runtime's threads per call

    def swap(self, folder: Path, trusted: dict[str, Ed25519PublicKey]) -> LoadedModel:
        with self._lock:
            try:
                model = load_model(folder, trusted, self.int8, self.threads)
            except BundleError as exc:
                reason = type(exc).__name__
                log.error("refused bundle %s (%s): %s; still serving %s", folder, reason, exc,
                          f"v{self.current.version}" if self.current else "nothing")
                if self._on_failure:
                    self._on_failure(reason)
                raise
            previous, self.current = self.current, model
            log.info("now serving %s v%d (sha256 %s), was %s", model.manifest.name, model.version, model.sha256[:12],
                     f"v{previous.version}" if previous else "nothing")
            if self._on_swap:
                self._on_swap(model)
            return model


class BundleCache:
    """The site's bundles on disk, newest last; keeps `keep` of them for instant local rollback."""

    def __init__(self, root: Path, keep: int = 3) -> None:
        self.root = root
        self.keep = keep
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, version: int) -> Path:
        return self.root / f"v{version}"

    def versions(self) -> list[int]:
        found = [int(p.name[1:]) for p in self.root.glob("v*") if p.is_dir() and p.name[1:].isdigit()]
        return sorted(found, key=lambda v: self.folder(v).stat().st_mtime)

    def touch(self, version: int) -> None:
        """Mark a version as most recently used (what prune keeps)."""
        self.folder(version).touch()

    def prune(self, protect: int | None = None) -> list[int]:
        """Delete all but the `keep` most recently used bundles; never the one being served."""
        versions = self.versions()
        doomed = [v for v in versions[: max(0, len(versions) - self.keep)] if v != protect]
        for version in doomed:
            shutil.rmtree(self.folder(version), ignore_errors=True)
        return doomed

    def discard(self, version: int) -> None:
        shutil.rmtree(self.folder(version), ignore_errors=True)
