"""The desired-state Git repository, as the rollout controller writes it.

One YAML file per site (`sites/<site>.yaml`, schema in serving/desired.py) and one rollout
record per rollout (`rollouts/<id>.json`). Every wave and every rollback is one commit whose
message names the rollout, the wave and the reason, so Git is the audit trail. Writing the
same content again makes no commit: a resumed rollout never commits a finished wave twice.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from edgewave.serving.desired import BRANCH, DesiredState, git, read_desired, site_file
from edgewave.tasks.rollout import k8s

AUTHOR = ["-c", "user.name=edgewave", "-c", "user.email=edgewave@localhost"]


class DesiredStateRepo:
    """A local desired-state repository (the embedded default; agents fetch from it)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def ensure(self) -> DesiredStateRepo:
        """Create the repository with a first commit if it does not exist yet."""
        if (self.path / ".git").exists():
            return self
        self.path.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--initial-branch", BRANCH, cwd=self.path)
        (self.path / "README.md").write_text(
            "# edgewave desired state\n\n`sites/<site>.yaml`: what each site should run (written by the rollout "
            "flow, applied by agents, Argo CD or Flux).\n`rollouts/<id>.json`: each rollout's waves and decisions.\n")
        git("add", "README.md", cwd=self.path)
        git(*AUTHOR, "commit", "--quiet", "-m", "desired state: initial commit", cwd=self.path)
        return self

    def read(self, site: str) -> DesiredState | None:
        return read_desired(self.path / site_file(site), site)

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.path).strip()

    def commit(self, states: list[DesiredState], message: str, record: tuple[str, dict] | None = None) -> str | None:
        """Write the site files (and the rollout record) and commit; None when nothing changed.

        A state with an image is a Kubernetes site: its kustomize overlay (and the base it
        builds on) goes into the same commit, so Argo CD / Flux see the wave at once.
        """
        files: dict[str, str] = {}
        for state in states:
            files[site_file(state.site)] = yaml.safe_dump(state.model_dump(mode="json", exclude_none=True),
                                                          sort_keys=False)
            if state.image:
                files.update(k8s.base_files())
                files[k8s.overlay_path(state.site)] = k8s.overlay(state)
        paths = []
        for name, text in files.items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            paths.append(name)
        if record is not None:
            rollout_id, content = record
            target = self.path / "rollouts" / f"{rollout_id}.json"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(json.dumps(content, indent=1, sort_keys=True, default=str) + "\n")
            paths.append(str(target.relative_to(self.path)))
        if not paths:
            return None
        git("add", "--", *paths, cwd=self.path)
        if not git("status", "--porcelain", "--", *paths, cwd=self.path).strip():
            return None
        git(*AUTHOR, "commit", "--quiet", "-m", message, cwd=self.path)
        return self.head()

    def record(self, rollout_id: str) -> dict | None:
        path = self.path / "rollouts" / f"{rollout_id}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self, grep: str | None = None) -> list[str]:
        """Commit subjects, newest first (optionally only those mentioning `grep`)."""
        args = ["log", "--format=%s"] + ([f"--grep={grep}", "--fixed-strings"] if grep else [])
        return [line for line in git(*args, cwd=self.path).splitlines() if line]
