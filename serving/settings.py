"""What an edge site reads from its environment: `EDGEWAVE_*` variables and an optional `.env`.

The edge's own settings class, so a site needs nothing of the control plane; the control
plane's `Settings` (tasks/platform/settings.py) builds on it and adds what only it reads.
Built once at the edge of the program and passed down; nothing reads the environment at
import time.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SITE_ID_PATTERN = r"^[A-Za-z0-9][\w.-]*$"


class EdgeSettings(BaseSettings):
    """An edge site's configuration: where it listens, what it samples, where it syncs from."""

    model_config = SettingsConfigDict(env_prefix="EDGEWAVE_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".edgewave"), description="Folder holding all embedded state.")
    trusted_keys_dir: Path | None = Field(
        None, description="Folder of trusted public keys (*.pub) for bundle verification."
    )
    site_id: str = Field("local", pattern=SITE_ID_PATTERN, description="This site's id.")
    serve_host: str = Field("127.0.0.1", description="Address the site's HTTP service binds to.")
    serve_port: int = Field(8080, ge=0, le=65535)
    max_batch: int = Field(1_000, ge=1, description="Rows per request above which the answer is 413.")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Request bodies above this get 413.")
    reject_out_of_range: bool = Field(
        False, description="Refuse (422) rows outside the training range instead of only counting them."
    )
    sample_fraction: float = Field(0.1, ge=0, le=1, description="Share of requests kept for drift checks.")
    sample_window_seconds: float = Field(60.0, gt=0, description="Length of one sample window file.")
    sample_buffer_max_bytes: int = Field(
        256 * 1024 * 1024, ge=1024, description="Disk the site may use for unshipped sample windows."
    )
    desired_state_remote: str | None = Field(
        None, description="Git remote holding sites/<site>.yaml; default the repo under home."
    )
    monitoring_store_url: str | None = Field(
        None, description="fsspec URL sample windows are shipped to; default a folder under home."
    )
    sync_interval_seconds: float = Field(10.0, gt=0, description="How often the agent syncs.")
    bundles_kept: int = Field(3, ge=1, description="Bundles a site keeps on disk for local rollback.")

    @model_validator(mode="after")
    def _absolute_home(self) -> EdgeSettings:
        self.home = self.home.expanduser().resolve()
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def trusted_keys(self) -> Path:
        return self.trusted_keys_dir or self.home / "keys"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def desired_state_url(self) -> str:
        return self.desired_state_remote or str(self.home / "desired-state")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def monitoring_store(self) -> str:
        return self.monitoring_store_url or (self.home / "monitoring").as_uri()

    def site_dir(self, site_id: str | None = None) -> Path:
        """A site's own state: bundle cache, sample windows, desired-state checkout."""
        return self.home / "sites" / (site_id or self.site_id)
