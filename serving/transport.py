"""Moving files between an edge site and its stores: bundles in (fsspec URL or OCI artifact),
sample windows out (monitoring store), with this site's credentials."""

from __future__ import annotations

from pathlib import Path

from edgewave.serving.access import RemoteAccess
from edgewave.serving.bundle import MANIFEST, BundleUnsafeError
from edgewave.serving.oci import SCHEME as OCI
from edgewave.serving.oci import pull_bundle
from edgewave.serving.stores import open_store, plain_files, put_atomic


def download_bundle(url: str, folder: Path, access: RemoteAccess | None = None) -> Path:
    """Fetch a bundle folder (verification is the caller's next step): `oci://…@sha256:` or any fsspec URL."""
    if url.startswith(OCI):
        return pull_bundle(url, folder, access or RemoteAccess())
    fs, root = open_store(url, access)
    if not fs.exists(f"{root}/{MANIFEST}"):
        raise FileNotFoundError(f"{url}: no {MANIFEST} there")
    files, other = plain_files(fs, root)
    if other:  # never read through: a bundle holds plain files only
        raise BundleUnsafeError(f"{url}: " + "; ".join(f"{name} is {what}" for name, what in sorted(other.items()))
                                + "; a bundle holds plain files only")
    folder.mkdir(parents=True, exist_ok=True)
    for path in files:
        fs.get_file(path, str(folder / path.rstrip("/").rsplit("/", 1)[-1]))
    return folder


def upload_confirmed(local: Path, store_url: str, key: str, access: RemoteAccess | None = None) -> str:
    """Upload `local` to `<store>/<key>`, whole or not at all, and confirm it arrived with the same size.

    The store root must exist already: a missing root means the store (a mount, a bucket) is
    unreachable, and creating it would hide that.
    """
    fs, root = open_store(store_url, access)
    # An object store's bucket is no folder a site may look at or make (its identity may write its own
    # prefix only), and prefixes need no making: a missing bucket fails the upload itself, naming it.
    target = f"{root.rstrip('/')}/{key}"
    if not _object_store(fs):
        if not fs.exists(root):
            raise ConnectionError(f"monitoring store {store_url} is not reachable (its root does not exist)")
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    return put_atomic(fs, local, target)


def _object_store(fs) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple | list) else (fs.protocol,)
    return bool({"s3", "s3a", "gs", "gcs", "az", "abfs"} & set(protocols))
