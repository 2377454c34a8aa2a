"""A site's desired state: what the rollout writes to Git and the agent applies.

One YAML file per site, `sites/<site>.yaml`, in the desired-state repository. The rollout flow
commits it (one commit per wave, tasks/rollout/gitops.py); the agent fetches it
(serving/gitmirror.py) and applies it; Git keeps the history.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from edgewave.serving.errors import Actionable, validated_yaml

BRANCH = "main"


class DesiredStateError(ValueError, Actionable):
    """A desired-state file that cannot be applied: unreadable, invalid or for another site."""


class DesiredState(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str = Field(min_length=1)
    model: str = Field(min_length=1)
    version: int = Field(ge=1)
    bundle_url: str = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the bundle's model.onnx")
    rollout_id: str = Field(min_length=1)
    image: str | None = Field(default=None, description="Serving image, for Kubernetes sites.")
    fleet: str | None = Field(default=None, description="The fleet whose controller wrote it (a Kubernetes site's "
                              "overlay gives its pods this EDGEWAVE_FLEET_ID).")
    rollback: bool = Field(default=False, description="Returns the site to an older version on purpose: an agent applies a "
                           "version lower than the one it runs only when this is set.")
    reason: str | None = None
    updated_at: datetime | None = None


def site_file(site_id: str) -> str:
    return f"sites/{site_id}.yaml"


def parse_desired(text: str, where: str, site_id: str) -> DesiredState:
    """A site's desired state from its file's text; DesiredStateError names `where` and the field."""
    state = validated_yaml(text, where, DesiredState, DesiredStateError)
    if state.site != site_id:
        raise DesiredStateError(f"{where}: written for site {state.site!r}, this is {site_id!r}")
    return state


def read_desired(path: Path, site_id: str) -> DesiredState | None:
    """The site's desired state from a checkout, None if the repo has none for it yet."""
    return parse_desired(path.read_text(), str(path), site_id) if path.exists() else None
