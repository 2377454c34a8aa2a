"""The model bundle as the edge sees it: its manifest schema and its verification.

A bundle is a folder: `model.onnx` (+ optional variants), `bundle.json` (the manifest) and
`bundle.sig` (an ed25519 signature over the manifest's exact bytes). The manifest holds the
sha256 of every model file, so one signature covers the whole bundle. An edge site loads
nothing that `verify_bundle` has not accepted.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, ValidationError

from edgewave.serving.errors import Actionable, describe

MANIFEST = "bundle.json"
SIGNATURE = "bundle.sig"
MODEL = "model.onnx"


class BundleError(Actionable):
    """Base of every reason a bundle is refused."""


class BundleIncompleteError(BundleError):
    """A file the bundle must contain is absent."""


class SignatureMissingError(BundleError):
    """The bundle carries no signature."""


class UnknownKeyError(BundleError):
    """The bundle is signed by a key this site does not trust."""


class SignatureInvalidError(BundleError):
    """The signature does not match the manifest: it was edited or signed by another key."""


class ManifestInvalidError(BundleError):
    """The manifest is signed but lacks fields or has wrong values."""


class HashMismatchError(BundleError):
    """A model file's content does not match the sha256 in the manifest."""


class BundleUnsafeError(BundleError):
    """A bundle entry that is not a plain file of its own: a symbolic link, a hard link, a folder or
    a device. Reading through one reads outside the bundle (a signed bundle whose `extra.txt` links
    to /etc/shadow would have the site copy that file)."""


def check_plain_files(folder: Path) -> None:
    """Every entry of the bundle folder is a regular file with one link; raise naming the first that is not."""
    for path in sorted(folder.iterdir()):
        info = path.lstat()  # never follows a link
        if stat.S_ISLNK(info.st_mode):
            raise BundleUnsafeError(f"{path}: a symbolic link (to {os.readlink(path)}); a bundle holds plain files only")
        if not stat.S_ISREG(info.st_mode):
            kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a special file"
            raise BundleUnsafeError(f"{path}: {kind}; a bundle holds plain files only")
        if info.st_nlink > 1:
            raise BundleUnsafeError(f"{path}: has {info.st_nlink} hard links; a bundle's files must be its own")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    name: str = Field(min_length=1)
    dtype: Literal["float32"] = "float32"
    min: float = Field(description="Lowest value seen in training: below it a row is served and counted.")
    max: float = Field(description="Highest value seen in training: above it a row is served and counted.")
    valid_min: float | None = Field(default=None, description="The dataset spec's physical range: a value "
                                    "outside it is refused (422), never scored. None: no bound (older bundles).")
    valid_max: float | None = None


class InputSchema(_Strict):
    name: str = "features"
    features: list[FeatureSpec] = Field(min_length=1)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]


class ImageInput(_Strict):
    """An image model's input: decoded pixels, uint8 [batch, height, width, channels] of any size near
    the trained one (the graph resizes and normalises), and the limits a site holds a request to."""

    kind: Literal["image"] = "image"
    name: str = "image"
    width: int = Field(ge=8, le=4096, description="The size the model was trained at.")
    height: int = Field(ge=8, le=4096)
    channels: Literal[1, 3]
    size_tolerance: float = Field(gt=0, le=4, description="Width or height further than this share from the trained "
                                  "size: refused (another camera or a wrong crop).")
    max_bytes: int = Field(ge=1_000, description="Largest encoded image decoded.")
    max_pixels: int = Field(ge=64, description="Largest width x height decoded: a decompression bomb is refused "
                            "before its pixels are.")
    max_batch: int = Field(ge=1, le=1024)

    @property
    def mode(self) -> str:
        return "L" if self.channels == 1 else "RGB"


class OutputSchema(_Strict):
    name: str = "probabilities"
    positive_index: int = Field(default=1, ge=0)
    ok_index: int | None = Field(default=None, ge=0, description="Image models: the good class's column; "
                                 "P(defect) = 1 - its probability, and each class is scored.")
    embedding: str | None = Field(default=None, description="Image models: the output holding the image embedding "
                                  "(the penultimate layer), which drift is measured on.")


class ModelFile(_Strict):
    path: str = Field(pattern=r"^[\w.-]+\.onnx$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(gt=0)


class Reference(_Strict):
    """Training reference for drift checks: a row sample, by column."""

    rows: int = Field(gt=0)
    columns: dict[str, list[float]]


def _input_kind(value: object) -> str:
    """`image` for an image model's input (its `kind` says so); a table's, as every bundle before them, has none."""
    if isinstance(value, dict):
        return "image" if value.get("kind") == "image" else "table"
    return "image" if isinstance(value, ImageInput) else "table"


class BundleManifest(_Strict):
    schema_version: Literal[1] = 1
    name: str = Field(min_length=1)
    version: int = Field(ge=1)
    created_at: datetime
    edgewave_version: str
    family: str
    model: ModelFile
    variants: dict[str, ModelFile] = Field(default_factory=dict)
    input: Annotated[Annotated[InputSchema, Tag("table")] | Annotated[ImageInput, Tag("image")],
                     Discriminator(_input_kind)]
    output: OutputSchema
    class_labels: list[str] = Field(min_length=2)
    threshold: float = Field(ge=0, le=1)
    metrics: dict[str, float]
    data_fingerprint: str
    parity_max_abs_diff: float
    reference: Reference


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short stable name of a public key: the first 16 hex digits of sha256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)


def parse_public_keys(text: str | bytes, where: str = "trusted public keys") -> dict[str, Ed25519PublicKey]:
    """Every PEM public key block in `text`, by key id."""
    data = text.encode() if isinstance(text, str) else text
    keys: dict[str, Ed25519PublicKey] = {}
    for block in _PEM_BLOCK.findall(data):
        key = serialization.load_pem_public_key(block)
        if not isinstance(key, Ed25519PublicKey):
            raise BundleError(f"{where}: not an ed25519 public key")
        keys[key_id(key)] = key
    return keys


def load_trusted_keys(folder: Path) -> dict[str, Ed25519PublicKey]:
    """Every `*.pub` (PEM) in `folder`, by key id."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in sorted(Path(folder).glob("*.pub")):
        keys.update(parse_public_keys(path.read_bytes(), str(path)))
    return keys


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_signature(folder: Path) -> tuple[str, bytes]:
    path = folder / SIGNATURE
    if not path.exists():
        raise SignatureMissingError(f"{folder}: no {SIGNATURE}; unsigned bundles are refused")
    try:
        data = json.loads(path.read_text())
        return str(data["key_id"]), base64.b64decode(data["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as exc:
        raise SignatureMissingError(f"{path}: unreadable signature file ({exc})") from exc


def verify_bundle(folder: str | Path, trusted: dict[str, Ed25519PublicKey]) -> BundleManifest:
    """Check signature, manifest and file hashes, in that order; return the manifest.

    Raises a distinct `BundleError` subclass for each way a bundle can be wrong, so the edge
    can count and report why it refused one.
    """
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.exists():
        raise BundleIncompleteError(f"{folder}: no {MANIFEST}")
    check_plain_files(folder)  # before reading anything through a link
    manifest_bytes = manifest_path.read_bytes()
    signer, signature = _read_signature(folder)
    key = trusted.get(signer)
    if key is None:
        raise UnknownKeyError(f"{folder}: signed by key {signer}, which is not among the trusted keys {sorted(trusted)}")
    try:
        key.verify(signature, manifest_bytes)
    except InvalidSignature:
        raise SignatureInvalidError(
            f"{folder}: the signature does not match {MANIFEST} for key {signer} (manifest edited or signed by another key)"
        ) from None
    try:
        manifest = BundleManifest.model_validate_json(manifest_bytes)
    except ValidationError as exc:
        raise ManifestInvalidError(f"{manifest_path}: {describe(exc)}") from None
    for entry in [manifest.model, *manifest.variants.values()]:
        path = folder / entry.path
        if not path.exists():
            raise BundleIncompleteError(f"{folder}: {entry.path} is named in the manifest but absent")
        actual = file_sha256(path)
        if actual != entry.sha256:
            raise HashMismatchError(f"{path}: sha256 {actual} does not match the manifest's {entry.sha256}")
    return manifest
