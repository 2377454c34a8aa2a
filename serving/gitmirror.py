"""The agent's read-only mirror of the desired-state repository, without a git binary.

A site image carries no git and no ssh client (Debian's would add ~35 MB to a 350 MB budget),
so the agent fetches with dulwich, a Git implementation in Python: over SSH through paramiko
(the site's key; the server's host key checked against its known_hosts, never trusted on
first sight), over HTTPS with a token, or from a local path (the embedded default). It keeps a
bare repository of the remote's main branch and reads files from the fetched commit.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, cast
from urllib.parse import urlparse

from edgewave.serving.access import RemoteAccess
from edgewave.serving.redact import redact

if TYPE_CHECKING:  # dulwich itself is imported where it is used
    from dulwich.objects import Blob, Commit
    from dulwich.refs import Ref

log = logging.getLogger("edgewave.agent")
BRANCH = cast("Ref", b"refs/heads/main")
FETCH_DEPTH = 1  # the tip only: what the agent reads


class _Channel:
    """A paramiko channel with the file-like surface dulwich's protocol code reads and writes."""

    def __init__(self, client, channel) -> None:
        self.client, self.channel = client, channel

    def read(self, n: int | None = None) -> bytes:
        if n is None:
            chunks = []
            while chunk := self.channel.recv(65536):
                chunks.append(chunk)
            return b"".join(chunks)
        data = bytearray()
        while len(data) < n:
            chunk = self.channel.recv(n - len(data))
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def write(self, data: bytes) -> int:
        self.channel.sendall(data)
        return len(data)

    def can_read(self) -> bool:
        return self.channel.recv_ready()

    def close(self, timeout: int | None = None) -> None:
        self.channel.close()
        self.client.close()


def _ssh_vendor(access: RemoteAccess):
    import paramiko
    from dulwich.client import SSHVendor

    class ParamikoVendor(SSHVendor):
        """dulwich's SSH transport over paramiko: this key only, the host key checked."""

        def run_command(self, host, command, username=None, port=None, password=None, key_filename=None,
                        ssh_command=None, protocol_version=None):
            client = paramiko.SSHClient()
            if access.known_hosts:
                client.load_host_keys(str(access.known_hosts))
            else:
                client.load_system_host_keys()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            client.connect(host, port=port or 22, username=username,
                           key_filename=str(access.ssh_key) if access.ssh_key else None,
                           look_for_keys=access.ssh_key is None, allow_agent=False, timeout=15, banner_timeout=15,
                           auth_timeout=15)
            transport = client.get_transport()
            if transport is None:  # connect() returned without a session: say so rather than fail on None
                raise ConnectionError(f"ssh to {host}:{port or 22}: no transport after connecting")
            channel = transport.open_session(timeout=15)
            if protocol_version == 2:
                channel.set_environment_variable("GIT_PROTOCOL", "version=2")
            channel.exec_command(command if isinstance(command, str) else command.decode()
                                 if isinstance(command, bytes) else " ".join(command))
            return _Channel(client, channel)

    return ParamikoVendor()


def _client(remote: str, access: RemoteAccess):
    """(dulwich client, path on the remote) for any URL git would accept."""
    from dulwich.client import SSHGitClient, get_transport_and_path

    parsed = urlparse(remote)
    if parsed.scheme in ("ssh", "git+ssh", "ssh+git"):
        if not parsed.hostname:
            raise ValueError(f"{redact(remote)}: no host in the URL")
        return SSHGitClient(parsed.hostname, port=parsed.port, username=parsed.username,
                            vendor=_ssh_vendor(access)), parsed.path
    if parsed.scheme in ("http", "https") and access.git_token:
        return get_transport_and_path(remote, username=access.git_username, password=access.git_token)
    if parsed.scheme == "file":
        return get_transport_and_path(parsed.path)
    return get_transport_and_path(remote)


class GitMirror:
    """A bare copy of the remote's main branch, updated by fetch; files are read from its head."""

    def __init__(self, remote: str, folder: Path, access: RemoteAccess | None = None) -> None:
        self.remote = remote
        self.folder = folder
        self.access = access or RemoteAccess()
        self._head: bytes | None = None
        self._clear_stale_locks()

    def _clear_stale_locks(self) -> None:
        """Remove the lock files a process left when it stopped mid-fetch (a power cut, a kill, a home
        copied while its sites ran). Only this agent writes its mirror, and it holds no lock before its
        first fetch, so every one found now is stale; left in place, dulwich refused every later fetch
        (FileLocked on `shallow.lock`) and the site never synced again."""
        if not self.folder.is_dir():
            return
        for lock in sorted(self.folder.rglob("*.lock")):
            lock.unlink(missing_ok=True)
            log.warning("removed %s, left in the desired-state mirror by a process that stopped mid-fetch", lock)

    @property
    def head(self) -> str | None:
        """The commit the last fetch brought (None before the first)."""
        return self._head.decode() if self._head is not None else None

    def _repo(self):
        from dulwich.repo import Repo

        if (self.folder / "HEAD").exists():
            return Repo(str(self.folder))
        self.folder.mkdir(parents=True, exist_ok=True)
        return Repo.init_bare(str(self.folder))

    def sync(self) -> str:
        """Fetch the remote's main branch; returns its head commit. Raises ConnectionError (redacted)."""
        repo = self._repo()
        try:
            client, path = _client(self.remote, self.access)
            # depth 1: an agent reads only the tip, so a new site (or a fleet restarting at once) costs the Git
            # host the tip's objects, not every rollout's history (measured: bench/fleet_sync.py)
            result = client.fetch(path, repo, determine_wants=lambda refs, depth=None: [refs[BRANCH]]
                                  if BRANCH in refs else [], depth=FETCH_DEPTH)
        except OSError as exc:
            raise ConnectionError(redact(f"fetch of {self.remote} failed: {type(exc).__name__}: {exc}")) from None
        except Exception as exc:  # dulwich and paramiko raise their own types (host key, auth, protocol)
            raise ConnectionError(redact(f"fetch of {self.remote} failed: {type(exc).__name__}: {exc}")) from None
        finally:
            repo.close()
        head = result.refs.get(BRANCH)
        if head is None:
            raise ConnectionError(redact(f"{self.remote} has no main branch yet"))
        repo = self._repo()
        try:
            repo.refs[BRANCH] = head
        finally:
            repo.close()
        self._head = head
        return head.decode()

    def read(self, path: str) -> str | None:
        """The file at `path` in the last fetched commit, None when it does not exist."""
        if self._head is None:
            return None
        from dulwich.object_store import tree_lookup_path

        repo = self._repo()
        try:
            tree = cast("Commit", repo[self._head]).tree
            try:
                _, sha = tree_lookup_path(repo.object_store.__getitem__, tree, path.encode())
            except KeyError:
                return None
            return cast("Blob", repo[sha]).data.decode()
        finally:
            repo.close()
