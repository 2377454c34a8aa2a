"""The file stores a site talks to (bundle store, monitoring store): any fsspec URL, opened one way.

`sftp://user@host:port/path` uses the SSH key of `RemoteAccess` and checks the server's host
key against its known_hosts (fsspec's own SFTP file system trusts any host key on first
sight); other URLs (`file://`, `s3://` with the usual AWS_* environment, `memory://`) go to
fsspec as they are.

Windows are written so that no reader ever sees half of one: under a hidden temporary name
first, checked for size, then renamed (atomic on a local disk and over SFTP; on S3 an object
only ever appears whole).
"""

from __future__ import annotations

import functools
import uuid
from pathlib import Path

import fsspec

from edgewave.serving.access import RemoteAccess

PARTIAL_PREFIX = "."  # a file being written; readers skip names that start with it


@functools.cache
def _checked_sftp():
    """The SFTP file system class (built once: fsspec reuses a connection per class and arguments)."""
    import paramiko
    from fsspec.implementations.sftp import SFTPFileSystem

    class CheckedSFTPFileSystem(SFTPFileSystem):
        """SFTP whose host key must be in the given known_hosts (or the user's), never auto-added."""

        def __init__(self, host: str, known_hosts: str | None = None, **ssh_kwargs) -> None:
            self.known_hosts = known_hosts
            super().__init__(host, **ssh_kwargs)

        def _connect(self) -> None:
            self.client = paramiko.SSHClient()
            if self.known_hosts:
                self.client.load_host_keys(self.known_hosts)
            else:
                self.client.load_system_host_keys()
            self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
            self.client.connect(self.host, **self.ssh_kwargs)
            self.ftp = self.client.open_sftp()

    return CheckedSFTPFileSystem


def open_store(url: str, access: RemoteAccess | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """(file system, root path) for a store URL, with this process's credentials."""
    access = access or RemoteAccess()
    if url.startswith(("sftp://", "ssh://")):
        from fsspec.utils import infer_storage_options

        options = infer_storage_options(url)
        sftp = access.sftp_options()
        try:
            fs = _checked_sftp()(options["host"], known_hosts=sftp["known_hosts"], port=int(options.get("port") or 22),
                                 username=options.get("username"), key_filename=sftp["key_filename"],
                                 look_for_keys=sftp["key_filename"] is None, allow_agent=False, timeout=15,
                                 banner_timeout=15, auth_timeout=15)
        except Exception as exc:  # paramiko's errors: host key, auth, network
            from edgewave.serving.redact import redact

            raise ConnectionError(redact(f"{url}: SFTP connection failed: {type(exc).__name__}: {exc}")) from None
        return fs, options["path"] or "/"
    return fsspec.core.url_to_fs(url)


def plain_files(fs, folder: str) -> tuple[list[str], dict[str, str]]:
    """The regular files of a store folder, and what else is there (name → what it is), never followed.

    Whoever can write a folder can plant a symbolic link there (a site in its own prefix, to another
    site's windows or /etc/shadow; a bundle folder, to anything): a reader that follows it reads
    outside the folder. SFTP lists a link as type "link"; a local or mounted store says `islink` and
    its link count."""
    files, skipped = [], {}
    for entry in fs.ls(folder, detail=True):
        name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
        if entry.get("islink") or entry.get("type") == "link":
            skipped[name] = "a symbolic link, not followed"
        elif entry.get("type") != "file":
            skipped[name] = f"a {entry.get('type') or 'special file'}, not a plain file"
        elif entry.get("nlink", 1) > 1:
            skipped[name] = f"a file with {entry['nlink']} hard links, not read"
        else:
            files.append(entry["name"])
    return sorted(files), skipped


def put_atomic(fs: fsspec.AbstractFileSystem, local: Path, target: str) -> str:
    """Upload `local` to `target` so that readers see all of it or nothing; confirm its size first."""
    folder, name = target.rsplit("/", 1)
    partial = f"{folder}/{PARTIAL_PREFIX}{name}.{uuid.uuid4().hex[:8]}.partial"
    fs.put_file(str(local), partial)
    size = fs.size(partial)
    if size != local.stat().st_size:
        fs.rm_file(partial)
        raise OSError(f"upload of {local.name} not confirmed: {size} bytes arrived, {local.stat().st_size} sent")
    fs.mv(partial, target)  # replaces a window re-sent after a lost confirmation (same name, same rows)
    return target
