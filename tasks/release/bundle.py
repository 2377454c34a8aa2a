"""Building, signing and storing model bundles (the control-plane half of serving/bundle.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path

import fsspec
import numpy as np
import pandas as pd
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edgewave.serving.bundle import (
    MANIFEST,
    MODEL,
    SIGNATURE,
    BundleManifest,
    FeatureSpec,
    ImageInput,
    InputSchema,
    ModelFile,
    OutputSchema,
    Reference,
    key_id,
    parse_public_keys,
)
from edgewave.serving.errors import Actionable
from edgewave.serving.transport import download_bundle  # noqa: F401  (one implementation, re-exported)
from edgewave.tasks.data.ai4i import CLASS_LABELS, FEATURES
from edgewave.tasks.data.images import ImageLimits, ImageShape
from edgewave.tasks.release.export import INPUT_NAME, OUTPUT_NAME

INT8_MODEL = "model.int8.onnx"


def edgewave_version() -> str:
    try:
        return package_version("edgewave")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


class SigningKeyError(ValueError, Actionable):
    """The configured signing key is missing or unusable; never replaced by a new one."""


def load_or_create_signing_key(path: Path) -> Ed25519PrivateKey:
    """The release signing key; created with its `.pub` beside it on first use (mode 0600)."""
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(f"{path}: signing key is readable by others (mode {mode:o}); chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path}: not an ed25519 private key")
        return key
    if public_path(path).exists():
        raise SigningKeyError(f"{public_path(path)} exists but its private key {path} does not: refusing to replace "
                              "a key sites may already trust")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path(path).write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return key


def public_path(private_key_path: Path) -> Path:
    return private_key_path.with_suffix(".pub")


def signing_key(settings) -> Ed25519PrivateKey:
    """The release signing key: EDGEWAVE_SIGNING_KEY_PEM, else the file at EDGEWAVE_SIGNING_KEY_PATH.

    Only the embedded default (no key configured) is created on first use: a configured key
    that is missing is an error, because a new key would sign bundles no site trusts.
    """
    if settings.signing_key_pem is not None:
        try:
            key = serialization.load_pem_private_key(settings.signing_key_pem.get_secret_value().encode(), password=None)
        except (ValueError, TypeError) as exc:
            raise SigningKeyError(f"EDGEWAVE_SIGNING_KEY_PEM is not a PEM private key: {type(exc).__name__}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise SigningKeyError("EDGEWAVE_SIGNING_KEY_PEM is not an ed25519 private key")
        return key
    if settings.signing_key_path is not None and not settings.signing_key_path.exists():
        raise SigningKeyError(f"EDGEWAVE_SIGNING_KEY_PATH: {settings.signing_key_path} does not exist; refusing to "
                              "create a new key that no site trusts (mount the key, or unset the variable for the "
                              "embedded default)")
    return load_or_create_signing_key(settings.signing_key)


def public_pem(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def trusted_public_keys(settings) -> str:
    """The public keys (PEM text) the control plane gives its sites: EDGEWAVE_TRUSTED_KEYS_DIR's, else the signer's."""
    if settings.trusted_keys_dir is not None:
        return _public_keys_in(settings.trusted_keys_dir)
    if settings.trusted_public_keys:
        return settings.trusted_public_keys
    if settings.signing_key_pem is None and (beside := _public_keys_in(settings.signing_key.parent)):
        return beside
    return public_pem(signing_key(settings))


def _public_keys_in(folder: Path) -> str:
    return "".join(p.read_text() for p in sorted(folder.glob("*.pub")))


def trusted_keys(settings) -> dict[str, Ed25519PublicKey]:
    """`trusted_public_keys` parsed, by key id: what the control plane verifies bundles with."""
    return parse_public_keys(trusted_public_keys(settings))


def reference_from(train_frame: pd.DataFrame, features: tuple[str, ...], max_rows: int, seed: int = 0) -> Reference:
    """A row sample of the training data's raw columns: what drift checks compare a site's inputs with."""
    sample = train_frame.sample(n=min(max_rows, len(train_frame)), random_state=seed)
    return Reference(rows=len(sample),
                     columns={f: np.round(sample[f].to_numpy(dtype=float), 4).tolist() for f in features})


def model_file(name: str, content: bytes) -> ModelFile:
    return ModelFile(path=name, sha256=hashlib.sha256(content).hexdigest(), size=len(content))


def build_manifest(*, name: str, version: int, family: str, model: bytes, int8_model: bytes | None,
                   train_frame: pd.DataFrame, threshold: float, metrics: dict[str, float],
                   data_fingerprint: str, parity_max_abs_diff: float, reference_rows: int,
                   features: tuple[str, ...] = FEATURES, class_labels: tuple[str, str] = CLASS_LABELS,
                   physical: dict[str, tuple[float, float]] | None = None) -> BundleManifest:
    """The manifest of a bundle: the raw columns a site is sent, with the ranges seen in training and
    the physical ranges of the dataset spec (`physical`, by column), which the site enforces."""
    bounds = physical or {}
    specs = [FeatureSpec(name=f, min=float(train_frame[f].min()), max=float(train_frame[f].max()),
                         valid_min=bounds[f][0] if f in bounds else None,
                         valid_max=bounds[f][1] if f in bounds else None) for f in features]
    return BundleManifest(
        name=name,
        version=version,
        created_at=datetime.now(UTC),
        edgewave_version=edgewave_version(),
        family=family,
        model=model_file(MODEL, model),
        variants={"int8": model_file(INT8_MODEL, int8_model)} if int8_model else {},
        input=InputSchema(name=INPUT_NAME, features=specs),
        output=OutputSchema(name=OUTPUT_NAME, positive_index=1),
        class_labels=list(class_labels),
        threshold=threshold,
        metrics=metrics,
        data_fingerprint=data_fingerprint,
        parity_max_abs_diff=parity_max_abs_diff,
        reference=reference_from(train_frame, features, reference_rows),
    )


def build_image_manifest(*, name: str, version: int, family: str, model: bytes, int8_model: bytes | None,
                         shape: ImageShape, limits: ImageLimits, classes: tuple[str, ...], threshold: float,
                         metrics: dict[str, float], data_fingerprint: str, parity_max_abs_diff: float,
                         reference: Reference) -> BundleManifest:
    """The manifest of an image bundle: the size, channels and limits of the dataset spec, the
    classes with the good one first, and the reference descriptors and embeddings drift compares with."""
    from edgewave.tasks.release.vision import EMBEDDING_NAME
    from edgewave.tasks.release.vision import INPUT_NAME as IMAGE_INPUT

    return BundleManifest(
        name=name, version=version, created_at=datetime.now(UTC), edgewave_version=edgewave_version(),
        family=family, model=model_file(MODEL, model),
        variants={"int8": model_file(INT8_MODEL, int8_model)} if int8_model else {},
        input=ImageInput(name=IMAGE_INPUT, width=shape.width, height=shape.height, channels=shape.channels,
                         size_tolerance=shape.size_tolerance, max_bytes=limits.max_bytes,
                         max_pixels=limits.max_pixels, max_batch=limits.max_batch),
        output=OutputSchema(name=OUTPUT_NAME, positive_index=1, ok_index=0, embedding=EMBEDDING_NAME),
        class_labels=list(classes), threshold=threshold, metrics=metrics, data_fingerprint=data_fingerprint,
        parity_max_abs_diff=parity_max_abs_diff, reference=reference,
    )


def sign(manifest_bytes: bytes, key: Ed25519PrivateKey) -> bytes:
    """The `bundle.sig` content: key id and base64 ed25519 signature over the manifest bytes."""
    signature = base64.b64encode(key.sign(manifest_bytes)).decode()
    return json.dumps({"algorithm": "ed25519", "key_id": key_id(key.public_key()), "signature": signature}).encode()


def write_bundle(folder: Path, manifest: BundleManifest, model: bytes, int8_model: bytes | None,
                 key: Ed25519PrivateKey) -> Path:
    """Write the bundle files to `folder` and sign the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MODEL).write_bytes(model)
    if int8_model:
        (folder / INT8_MODEL).write_bytes(int8_model)
    manifest_bytes = manifest.model_dump_json(indent=1).encode()
    (folder / MANIFEST).write_bytes(manifest_bytes)
    (folder / SIGNATURE).write_bytes(sign(manifest_bytes, key))
    return folder


def bundle_url(store: str, name: str, version: int) -> str:
    return f"{store.rstrip('/')}/{name}/v{version}"


def upload_bundle(folder: Path, url: str) -> str:
    """Copy a bundle folder to the store; idempotent (same files, same place).

    The manifest and signature go last, so a reader never sees a signed manifest whose
    model file is still on its way.
    """
    fs, root = fsspec.core.url_to_fs(url)
    fs.makedirs(root, exist_ok=True)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    ordered = [f for f in files if f not in (MANIFEST, SIGNATURE)] + [MANIFEST, SIGNATURE]
    for name in ordered:
        fs.put_file(str(folder / name), f"{root}/{name}")
    return url


def push_artifact(settings, folder: Path, name: str, version: int) -> str:
    """The signed bundle as an OCI artifact in EDGEWAVE_BUNDLE_REGISTRY; returns `oci://…@sha256:…`."""
    from edgewave.serving.oci import push_bundle

    manifest = json.loads((folder / MANIFEST).read_text())
    return push_bundle(folder, f"oci://{settings.bundle_registry.rstrip('/')}/edgewave-bundles/{name}", f"v{version}",
                       settings.remote_access(),
                       {"name": name, "version": version, "sha256": manifest["model"]["sha256"]})
