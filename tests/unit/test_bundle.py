from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgewave.serving.bundle import (
    MANIFEST,
    MODEL,
    SIGNATURE,
    BundleIncompleteError,
    HashMismatchError,
    ManifestInvalidError,
    SignatureInvalidError,
    SignatureMissingError,
    UnknownKeyError,
    key_id,
    load_trusted_keys,
    parse_public_keys,
    verify_bundle,
)
from edgewave.tasks.data.ai4i import FEATURES, TARGET, generate
from edgewave.tasks.release.bundle import (
    INT8_MODEL,
    build_manifest,
    load_or_create_signing_key,
    public_path,
    sign,
    write_bundle,
)

MODEL_BYTES = b"\x08\x07onnx-model-bytes" * 100  # verification never parses the graph


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "keys" / "signing.key"


@pytest.fixture
def bundle(tmp_path: Path, key_path: Path) -> Path:
    key = load_or_create_signing_key(key_path)
    frame = generate(400, 1)[list(FEATURES) + [TARGET]]
    manifest = build_manifest(
        name="machine-failure", version=3, family="sklearn", model=MODEL_BYTES, int8_model=b"int8" * 50,
        train_frame=frame, threshold=0.4, metrics={"pr_auc": 0.9}, data_fingerprint="ab" * 32,
        parity_max_abs_diff=1e-7, reference_rows=150,
    )
    return write_bundle(tmp_path / "bundle", manifest, MODEL_BYTES, b"int8" * 50, key)


def trusted(key_path: Path) -> dict:
    return load_trusted_keys(key_path.parent)


def test_a_fresh_bundle_verifies_and_carries_schema_ranges_and_reference(bundle: Path, key_path: Path) -> None:
    manifest = verify_bundle(bundle, trusted(key_path))
    assert manifest.version == 3
    assert manifest.input.names == list(FEATURES)
    torque = next(f for f in manifest.input.features if f.name == "torque_nm")
    assert 0 <= torque.min < 40 < torque.max
    assert manifest.reference.rows == 150 and len(manifest.reference.columns["torque_nm"]) == 150
    assert manifest.variants["int8"].path == INT8_MODEL
    assert manifest.class_labels == ["ok", "failure"]


def test_one_changed_byte_of_the_model_is_a_hash_mismatch(bundle: Path, key_path: Path) -> None:
    data = bytearray((bundle / MODEL).read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / MODEL).write_bytes(bytes(data))
    with pytest.raises(HashMismatchError, match="model.onnx: sha256"):
        verify_bundle(bundle, trusted(key_path))


def test_a_changed_int8_variant_is_a_hash_mismatch_too(bundle: Path, key_path: Path) -> None:
    (bundle / INT8_MODEL).write_bytes(b"other")
    with pytest.raises(HashMismatchError, match=INT8_MODEL):
        verify_bundle(bundle, trusted(key_path))


def test_an_edited_manifest_breaks_the_signature(bundle: Path, key_path: Path) -> None:
    text = (bundle / MANIFEST).read_text().replace('"threshold": 0.4', '"threshold": 0.9')
    assert '"threshold": 0.9' in text
    (bundle / MANIFEST).write_text(text)
    with pytest.raises(SignatureInvalidError, match="manifest edited or signed by another key"):
        verify_bundle(bundle, trusted(key_path))


def test_a_signature_by_another_key_is_an_unknown_key(bundle: Path, key_path: Path) -> None:
    intruder = Ed25519PrivateKey.generate()
    (bundle / SIGNATURE).write_bytes(sign((bundle / MANIFEST).read_bytes(), intruder))
    with pytest.raises(UnknownKeyError, match=f"signed by key {key_id(intruder.public_key())}"):
        verify_bundle(bundle, trusted(key_path))


def test_another_key_claiming_the_trusted_key_id_is_an_invalid_signature(bundle: Path, key_path: Path) -> None:
    forged = json.loads(sign((bundle / MANIFEST).read_bytes(), Ed25519PrivateKey.generate()))
    forged["key_id"] = json.loads((bundle / SIGNATURE).read_text())["key_id"]
    (bundle / SIGNATURE).write_text(json.dumps(forged))
    with pytest.raises(SignatureInvalidError):
        verify_bundle(bundle, trusted(key_path))


def test_a_missing_signature_is_refused(bundle: Path, key_path: Path) -> None:
    (bundle / SIGNATURE).unlink()
    with pytest.raises(SignatureMissingError, match="unsigned bundles are refused"):
        verify_bundle(bundle, trusted(key_path))


def test_a_signed_manifest_with_missing_fields_is_refused_naming_them(bundle: Path, key_path: Path) -> None:
    data = json.loads((bundle / MANIFEST).read_text())
    del data["threshold"], data["input"]["features"]
    manifest_bytes = json.dumps(data).encode()
    (bundle / MANIFEST).write_bytes(manifest_bytes)
    (bundle / SIGNATURE).write_bytes(sign(manifest_bytes, load_or_create_signing_key(key_path)))
    with pytest.raises(ManifestInvalidError) as refused:
        verify_bundle(bundle, trusted(key_path))
    assert "input.table.features: Field required" in str(refused.value)  # a table input: no `kind: image`
    assert "threshold: Field required" in str(refused.value)


def test_a_model_file_named_but_absent_is_incomplete(bundle: Path, key_path: Path) -> None:
    (bundle / MODEL).unlink()
    with pytest.raises(BundleIncompleteError, match="model.onnx is named in the manifest but absent"):
        verify_bundle(bundle, trusted(key_path))


def test_signing_key_is_created_private_once_and_then_reused(key_path: Path) -> None:
    first = load_or_create_signing_key(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert public_path(key_path).exists()
    again = load_or_create_signing_key(key_path)
    assert key_id(again.public_key()) == key_id(first.public_key())
    assert list(load_trusted_keys(key_path.parent)) == [key_id(first.public_key())]


def test_a_signing_key_readable_by_others_is_refused(key_path: Path) -> None:
    load_or_create_signing_key(key_path)
    os.chmod(key_path, 0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_or_create_signing_key(key_path)


def test_a_configured_signing_key_that_is_missing_is_an_error_never_a_new_key(tmp_path: Path) -> None:
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.bundle import SigningKeyError, signing_key

    configured = tmp_path / "mounted" / "signing.key"
    with pytest.raises(SigningKeyError, match="EDGEWAVE_SIGNING_KEY_PATH.*does not exist"):
        signing_key(Settings(home=tmp_path / "home", signing_key_path=configured))
    assert not configured.exists() and not configured.parent.exists()


def test_the_embedded_key_is_created_once_and_never_over_a_public_key_left_alone(tmp_path: Path) -> None:
    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.bundle import SigningKeyError, signing_key, trusted_public_keys

    settings = Settings(home=tmp_path / "home")
    key = signing_key(settings)
    assert key_id(signing_key(settings).public_key()) == key_id(key.public_key()), "created once, then loaded"
    assert list(parse_public_keys(trusted_public_keys(settings))) == [key_id(key.public_key())]
    settings.signing_key.unlink()  # only the public key is left: sites may trust it
    with pytest.raises(SigningKeyError, match="refusing to replace"):
        signing_key(settings)


def test_a_signing_key_given_as_a_secret_signs_and_is_what_sites_are_given(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    from edgewave.tasks.platform.settings import Settings
    from edgewave.tasks.release.bundle import SigningKeyError, signing_key, trusted_public_keys

    secret = Ed25519PrivateKey.generate()
    pem = secret.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption()).decode()
    settings = Settings(home=tmp_path / "home", signing_key_pem=pem)
    assert key_id(signing_key(settings).public_key()) == key_id(secret.public_key())
    assert list(parse_public_keys(trusted_public_keys(settings))) == [key_id(secret.public_key())]
    assert not (tmp_path / "home" / "keys").exists(), "nothing written, nothing minted"
    with pytest.raises(SigningKeyError, match="not a PEM private key") as caught:
        signing_key(Settings(home=tmp_path / "home", signing_key_pem="-----BEGIN PRIVATE KEY-----\nnope\n"))
    assert "nope" not in str(caught.value), "the secret's content is not repeated in the error"
