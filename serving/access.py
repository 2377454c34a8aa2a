"""How a process reaches its remotes: Git over SSH or HTTPS, SFTP, an OCI registry.

Credentials come from the environment or from files, never from a URL the user typed into a
config that gets logged: an SSH private key (a file, or its content in an environment
variable, written once to a 0600 file in the state dir) with a known_hosts that is always
checked, an HTTPS token for Git, a registry user and password. They reach git through its
environment (GIT_SSH_COMMAND, a credential helper that reads the token from the environment),
never its command line, so they show up in no process list, log or error message.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from edgewave.serving.errors import Actionable

SECRETS_DIR = "secrets"  # under a process's EDGEWAVE_HOME, mode 0700


class AccessError(ValueError, Actionable):
    """The credentials configured for a remote are incomplete or unusable; says which setting."""


def write_secret(folder: Path, name: str, content: str) -> Path:
    """`content` as a 0600 file in a 0700 folder (rewritten only when it changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / name
    text = content if content.endswith("\n") else content + "\n"
    if not path.exists() or path.read_text() != text:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    os.chmod(path, 0o600)
    return path


@dataclass(frozen=True)
class RemoteAccess:
    """Credentials for every remote of one process. Empty means anonymous / local only."""

    ssh_key: Path | None = None
    known_hosts: Path | None = None
    git_username: str = "x-access-token"
    git_token: str | None = field(default=None, repr=False)
    registry_username: str | None = None
    registry_password: str | None = field(default=None, repr=False)
    registry_plain_http: bool | None = None  # None: plain HTTP only for a loopback registry

    def __post_init__(self) -> None:
        if self.ssh_key is not None and not self.ssh_key.exists():
            raise AccessError(f"EDGEWAVE_SSH_KEY_PATH: {self.ssh_key} does not exist")
        if self.known_hosts is not None and not self.known_hosts.exists():
            raise AccessError(f"EDGEWAVE_SSH_KNOWN_HOSTS_PATH: {self.known_hosts} does not exist")

    def ssh_command(self) -> str:
        """The ssh command git runs: this key only, the host key checked against known_hosts, no prompts."""
        parts = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "ConnectTimeout=10"]
        if self.ssh_key is not None:
            parts += ["-i", str(self.ssh_key), "-o", "IdentitiesOnly=yes"]
        if self.known_hosts is not None:
            parts += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null"]
        return shlex.join(parts)

    def git_env(self) -> dict[str, str]:
        """Environment for a git subprocess: SSH settings, and the token for the credential helper."""
        env = {"GIT_TERMINAL_PROMPT": "0", "GIT_SSH_COMMAND": self.ssh_command(), "GCM_INTERACTIVE": "never"}
        if self.git_token:
            env["EDGEWAVE_GIT_HELPER_USERNAME"] = self.git_username
            env["EDGEWAVE_GIT_HELPER_TOKEN"] = self.git_token
        return env

    def git_config(self) -> list[str]:
        """`-c` options for git: with a token, a credential helper that answers from the environment."""
        if not self.git_token:
            return []
        helper = ('!f() { test "$1" = get || exit 0; echo "username=$EDGEWAVE_GIT_HELPER_USERNAME"; '
                  'echo "password=$EDGEWAVE_GIT_HELPER_TOKEN"; }; f')
        return ["-c", "credential.helper=", "-c", f"credential.helper={helper}"]

    def sftp_options(self) -> dict:
        """Keyword arguments for an SFTP connection (see serving/stores.py)."""
        return {"key_filename": str(self.ssh_key) if self.ssh_key else None,
                "known_hosts": str(self.known_hosts) if self.known_hosts else None}

    def secrets(self) -> list[str]:
        """Every secret string, for tests that check none leaked."""
        return [s for s in (self.git_token, self.registry_password) if s]
