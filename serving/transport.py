"""Moving files between an edge site and fsspec stores (bundle store, monitoring store)."""

from __future__ import annotations

from pathlib import Path

import fsspec

from edgewave.serving.bundle import MANIFEST


def download_bundle(url: str, folder: Path) -> Path:
    """Fetch a bundle folder from the store (verification is the caller's next step)."""
    fs, root = fsspec.core.url_to_fs(url)
    if not fs.exists(f"{root}/{MANIFEST}"):
        raise FileNotFoundError(f"{url}: no {MANIFEST} there")
    folder.mkdir(parents=True, exist_ok=True)
    for entry in fs.ls(root, detail=False):
        name = entry.rstrip("/").rsplit("/", 1)[-1]
        fs.get_file(entry, str(folder / name))
    return folder


def upload_confirmed(local: Path, store_url: str, key: str) -> str:
    """Upload `local` to `<store>/<key>` and confirm it is there with the same size.

    The store root must exist already: a missing root means the store (a mount, a bucket) is
    unreachable, and creating it would hide that.
    """
    fs, root = fsspec.core.url_to_fs(store_url)
    if not fs.exists(root):
        raise ConnectionError(f"monitoring store {store_url} is not reachable (its root does not exist)")
    target = f"{root.rstrip('/')}/{key}"
    fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
    fs.put_file(str(local), target)
    size = fs.size(target)
    if size != local.stat().st_size:
        raise IOError(f"upload of {local.name} to {store_url} not confirmed: {size} bytes there, {local.stat().st_size} here")
    return target
