"""The one settings object of edgewave.

Built once at the edge of the program (the CLI, a test) and passed down; nothing reads the
environment at import time. Only pydantic-settings is needed, so the edge runtime can use it.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """edgewave's configuration, read from `EDGEWAVE_*` variables and an optional `.env`."""

    model_config = SettingsConfigDict(env_prefix="EDGEWAVE_", env_file=".env", extra="ignore")

    home: Path = Field(Path(".edgewave"), description="Folder holding all embedded state.")
    tracking_uri: str | None = Field(
        None, description="MLflow tracking URI; default SQLite under home. An http:// URL uses a server."
    )
    bundle_store_url: str | None = Field(
        None, description="fsspec URL where signed bundles are stored; default a folder under home."
    )
    signing_key_path: Path | None = Field(
        None, description="ed25519 private key (PEM); created with its public key on first use."
    )
    trusted_keys_dir: Path | None = Field(
        None, description="Folder of trusted public keys (*.pub) for bundle verification."
    )
    model_name: str = Field("machine-failure", min_length=1, pattern=r"^[A-Za-z0-9][\w.-]*$")
    experiment_name: str = "edgewave-release"
    telemetry: bool = Field(False, description="Let Prefect and MLflow send usage telemetry.")

    data_path: Path | None = Field(
        None, description="Your own training data (CSV/Parquet, AI4I columns); default: generated data."
    )
    train_rows: int = Field(10_000, ge=500, le=5_000_000)
    data_seed: int | None = Field(None, description="Seed of the generated data; None draws one per run.")
    parity_tolerance: float = Field(1e-4, gt=0, le=1e-2)
    quantization_max_delta: float = Field(
        0.01, ge=0, description="Largest PR-AUC loss (and probability drift) an int8 variant may add."
    )
    gate_tolerance: float = Field(
        0.02, ge=0, le=1, description="How much PR-AUC a challenger may lose to the baseline."
    )
    gate_floor_pr_auc: float = Field(
        0.5, ge=0, le=1, description="PR-AUC the first model must reach with no baseline."
    )
    reference_rows: int = Field(5_000, ge=100, le=5_000)

    # --- edge site (serving runtime + agent) ---------------------------------------------
    site_id: str = Field("local", pattern=r"^[A-Za-z0-9][\w.-]*$", description="This site's id.")
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

    # --- fleet and rollout ---------------------------------------------------------------
    fleet_path: Path = Field(Path("deployments/fleet.yaml"), description="Fleet and rollout policy file.")
    prometheus_url: str | None = Field(
        None, description="Read rollout telemetry with PromQL from this Prometheus instead of scraping sites."
    )

    # --- serving image ---------------------------------------------------------------------
    docker_host: str | None = Field(
        None, description="Docker engine for the serving image (unix:///… or tcp://…); unset: DOCKER_HOST, else skip."
    )
    image_registry: str = Field("127.0.0.1:5000", description="OCI registry the serving image is pushed to.")
    image_base: str = Field("edgewave-base:bookworm-py311", description="BASE_IMAGE of deployments/Dockerfile.")
    image_required: bool = Field(False, description="Fail the release (instead of skipping) when no engine is reachable.")

    # --- drift and retraining -------------------------------------------------------------
    drift_workers: int = Field(
        0, ge=0, description="Processes for per-site drift checks on this machine; 0 = one per core."
    )
    dask_address: str | None = Field(
        None, description="Run per-site drift checks on this Dask scheduler (tcp://host:8786) instead."
    )
    feedback_rows_per_site: int = Field(
        5_000, ge=0, description="Most recent labelled rows per site that retraining adds to the data."
    )

    @model_validator(mode="after")
    def _absolute_home(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mlflow_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def bundle_store(self) -> str:
        return self.bundle_store_url or (self.home / "bundles").as_uri()

    @computed_field  # type: ignore[prop-decorator]
    @property
    def signing_key(self) -> Path:
        return self.signing_key_path or self.home / "keys" / "signing.key"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def trusted_keys(self) -> Path:
        return self.trusted_keys_dir or self.signing_key.parent

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

    @property
    def artifact_root(self) -> Path:
        """Where MLflow keeps artifacts when tracking is embedded (never the current folder)."""
        return self.home / "mlartifacts"

    @property
    def uses_tracking_server(self) -> bool:
        return self.mlflow_tracking_uri.startswith(("http://", "https://"))

    def apply_runtime_environment(self) -> None:
        """Point Prefect and MLflow at edgewave's state and turn their telemetry off.

        Must run before prefect or mlflow is imported: both read these at import.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("PREFECT_HOME", str(self.home / "prefect"))
        # MLflow's own HTTP retries default to ~4 minutes of backoff; keep them short so the
        # flow's task retries (which log what happens) do the waiting.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        if not self.telemetry:
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("DO_NOT_TRACK", "1")
