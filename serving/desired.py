"""A site's desired state: what the rollout writes to Git and the agent applies.

One YAML file per site, `sites/<site>.yaml`, in the desired-state repository. The rollout flow
commits it (one commit per wave); the agent fetches and applies it; Git keeps the history.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgewave.serving.access import RemoteAccess
from edgewave.serving.errors import describe
from edgewave.serving.redact import redact

BRANCH = "main"


class DesiredStateError(ValueError):
    """A desired-state file that cannot be applied: unreadable, invalid or for another site."""


class DesiredState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(min_length=1)
    model: str = Field(min_length=1)
    version: int = Field(ge=1)
    bundle_url: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the bundle's model.onnx")
    rollout_id: str = Field(min_length=1)
    image: str | None = Field(None, description="Serving image, for Kubernetes sites.")
    reason: str | None = None
    updated_at: datetime | None = None


def site_file(site_id: str) -> str:
    return f"sites/{site_id}.yaml"


def read_desired(path: Path, site_id: str) -> DesiredState | None:
    """The site's desired state, None if the repo has none for it yet."""
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise DesiredStateError(f"{path}: not valid YAML: {exc}") from None
    try:
        state = DesiredState.model_validate(data)
    except ValidationError as exc:
        raise DesiredStateError(f"{path}: {describe(exc)}") from None
    if state.site != site_id:
        raise DesiredStateError(f"{path}: written for site {state.site!r}, this is {site_id!r}")
    return state


def git(*args: str, cwd: Path | None = None, timeout: float = 30, access: RemoteAccess | None = None) -> str:
    """Run git; a failure raises ConnectionError with git's message, every URL in it redacted."""
    access = access or RemoteAccess()
    try:
        result = subprocess.run(["git", *access.git_config(), *args], cwd=cwd, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, **access.git_env()})
    except subprocess.TimeoutExpired:
        raise ConnectionError(redact(f"git {' '.join(args)} did not finish in {timeout:g}s")) from None
    if result.returncode != 0:
        raise GitError(redact(f"git {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}"))
    return result.stdout


class GitError(ConnectionError):
    """A git command failed; the message (redacted) is git's own."""


class GitMirror:
    """A read-only checkout of the desired-state remote, updated by fetch + hard reset."""

    def __init__(self, remote: str, checkout: Path, access: RemoteAccess | None = None) -> None:
        self.remote = remote
        self.checkout = checkout
        self.access = access

    def sync(self) -> str:
        """Fetch the remote and move to its head; returns the commit. Raises ConnectionError."""
        if not (self.checkout / ".git").exists():
            self.checkout.parent.mkdir(parents=True, exist_ok=True)
            git("clone", "--quiet", "--branch", BRANCH, self.remote, str(self.checkout), timeout=60,
                access=self.access)
        else:
            git("fetch", "--quiet", "origin", BRANCH, cwd=self.checkout, access=self.access)
            git("reset", "--quiet", "--hard", f"origin/{BRANCH}", cwd=self.checkout)
        return git("rev-parse", "HEAD", cwd=self.checkout).strip()
