"""The control plane's settings: the edge's own (serving/settings.py) plus what only the
control plane reads (tracking, bundle store, signing, data, gate, fleet, images, drift).

Built once at the edge of the program (the CLI, a flow run, a test) and passed down; nothing
reads the environment at import time. Flows take only what a person chooses as parameters
(a version, a reason): their settings are `active()`, which is what the caller set with `use()`
(the CLI, a test) or else this process's environment (a Prefect worker's). So no settings
object, and no credential in one, is ever stored as a flow-run parameter.
"""

from __future__ import annotations

import os
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path

from pydantic import Field, PositiveInt, SecretStr, computed_field

from edgewave.serving.settings import SITE_ID_PATTERN, EdgeSettings
from edgewave.tasks.platform.home import relocate

# Channels of the defect-detection CNN's four blocks. Measured in process with the PNG decode, the first
# convolution in float (bench/vision.py): at 32-64-96-128 int8 runs 2.0x fp32 at the same test PR-AUC; at
# 12-24-32-48 (a third of the training time) 1.2x, where fp32 itself runs 2.3x faster.
CNN_WIDTHS = (32, 64, 96, 128)


class Settings(EdgeSettings):
    """edgewave's configuration, read from `EDGEWAVE_*` variables and an optional `.env`."""

    tracking_uri: str | None = Field(
        default=None, description="MLflow tracking URI; default SQLite under home. An http:// URL uses a server."
    )
    bundle_store_url: str | None = Field(
        default=None, description="fsspec URL where signed bundles are stored; default a folder under home."
    )
    signing_key_path: Path | None = Field(
        default=None, description="ed25519 private key (PEM). Unset: one under home, created on first use; set but "
        "missing: an error (a new key would sign bundles no site trusts)."
    )
    signing_key_pem: SecretStr | None = Field(default=None, description="The signing key itself (PEM), e.g. from a secret.")
    model_name: str = Field(default="machine-failure", min_length=1, pattern=SITE_ID_PATTERN)
    experiment_name: str = "edgewave-release"
    telemetry: bool = Field(default=False, description="Let Prefect and MLflow send usage telemetry.")

    dataset: Path = Field(default=Path("deployments/dataset.yaml"), description="The dataset spec: columns, target, "
                          "derived features (EDGEWAVE_DATASET).")
    data_path: Path | None = Field(
        default=None, description="Your own training data (CSV/Parquet, laid out as the dataset spec says); default: generated."
    )
    train_rows: int = Field(default=10_000, ge=500, le=5_000_000)
    data_seed: int | None = Field(default=None, description="Seed of the generated data; None draws one per run.")
    search_budget: int = Field(default=4, ge=1, le=12, description="Tree-ensemble trials the release tries (scored on "
                               "validation PR-AUC, then blended with the MLP); 1 = histogram boosting alone.")
    parity_tolerance: float = Field(default=1e-4, gt=0, le=1e-2)
    quantization_max_delta: float = Field(
        default=0.01, ge=0, description="Largest PR-AUC loss (and probability drift) an int8 variant may add."
    )
    gate_tolerance: float = Field(
        default=0.02, ge=0, le=1, description="How much PR-AUC a challenger may lose to the baseline."
    )
    remote_retry_delays_seconds: list[float] = Field(
        default=[2, 5, 15, 30], max_length=20, description="Waits between the retries of a step that talks to a "
        "server (MLflow, the bundle store); one retry per entry. JSON list, e.g. `[2, 5, 15, 30]`."
    )
    gate_floor_pr_auc: float = Field(
        default=0.5, ge=0, le=1, description="PR-AUC the first model must reach with no baseline."
    )
    reference_rows: int = Field(default=5_000, ge=100, le=5_000)
    train_images: int = Field(default=2_400, ge=200, le=1_000_000, description="Parts the image generator makes for "
                              "an image dataset (kind: images) with no EDGEWAVE_DATA_PATH.")
    cnn_widths: tuple[PositiveInt, PositiveInt, PositiveInt, PositiveInt] = Field(
        default=CNN_WIDTHS, description="Channels of the defect-detection CNN's four conv blocks, JSON, e.g. "
        "`[32, 64, 96, 128]`; narrower trains and runs faster, but gains less from int8 (bench/vision.py).")
    cnn_epochs: int = Field(default=10, ge=1, le=200, description="Epochs of the defect-detection CNN (the one with the "
                            "best validation PR-AUC is kept).")

    # --- fleet and rollout ---------------------------------------------------------------
    fleet_path: Path = Field(default=Path("deployments/fleet.yaml"), description="Fleet and rollout policy file.")
    rollout_lease_seconds: float = Field(
        default=600.0, ge=30, description="How long a rollout's lease on its model lasts unless renewed (it renews while "
        "running); after that, or once its owner is gone, another run may take it over.")
    rollout_wait_seconds: float = Field(
        default=3600.0, ge=0, description="How long `--wait` waits for the model's running rollout to end.")
    site_env_dir: Path | None = Field(
        default=None, description="Folder of <site>.env files: each container site's own environment (its SSH key, its "
        "store account), like a Kubernetes Secret per site.")
    prometheus_url: str | None = Field(
        default=None, description="Read rollout telemetry with PromQL from this Prometheus instead of scraping sites."
    )
    central_prometheus: bool = Field(
        default=False, description="`make up` also starts a central Prometheus (remote-write receiver, the fleet's alert "
        "rules) and a Prometheus agent that scrapes the local fleet into it; flow runs then read rollout telemetry "
        "from the central one.")
    prometheus_max_age_seconds: float = Field(
        default=30.0, gt=0, description="On the PromQL path, a site whose latest sample is older reads as offline (a "
        "central Prometheus fed by remote write still holds a cut-off site's last samples).")

    # --- serving image ---------------------------------------------------------------------
    docker_host: str | None = Field(
        default=None, description="Docker engine for the serving image (unix:///… or tcp://…); unset: DOCKER_HOST, else skip."
    )
    image_registry: str = Field(default="127.0.0.1:5000", description="OCI registry the serving image is pushed to.")
    image_base: str = Field(default="edgewave-base:bookworm-py311", description="BASE_IMAGE of deployments/Dockerfile.")
    image_required: bool = Field(default=False, description="Fail the release (instead of skipping) when no engine is reachable.")
    bundle_registry: str | None = Field(
        default=None, description="OCI registry (host:port[/namespace]) the release pushes each signed bundle to as an "
        "artifact; sites then pull it by digest. Unset: sites fetch bundles from the bundle store.")

    # --- drift and retraining -------------------------------------------------------------
    drift_workers: int = Field(
        default=0, ge=0, description="Processes for per-site drift checks on this machine; 0 = one per core; 1 = in the "
        "flow's own process (small fleets: no worker start-up per check)."
    )
    dask_address: str | None = Field(
        default=None, description="Run per-site drift checks on this Dask scheduler (tcp://host:8786) instead."
    )
    feedback_rows_per_site: int = Field(
        default=5_000, ge=0, description="Most recent labelled rows per site that retraining adds to the data."
    )
    feedback_images_per_site: int = Field(
        default=300, ge=0, description="Most recent labelled images per site that an image model's retraining adds "
        "(the same image labelled twice counts once).")

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

    @property
    def trusted_keys(self) -> Path:
        """The control plane verifies bundles with the public keys beside its signing key (or those given)."""
        return self.trusted_keys_dir or self.signing_key.parent

    @property
    def artifact_root(self) -> Path:
        """Where MLflow keeps artifacts when tracking is embedded (never the current folder)."""
        return self.home / "mlartifacts"

    def fleet_identity(self) -> str:
        """The id of the fleet this control plane runs: EDGEWAVE_FLEET_ID, else one drawn once for the
        home (EDGEWAVE_HOME/fleet-id). Every site it starts states it, and the controller and `status`
        refuse a site that states another: two homes with the same fleet file and ports never take
        each other's sites for their own. Give EDGEWAVE_FLEET_ID to share one fleet between homes."""
        if self.fleet_id:
            return self.fleet_id
        path = self.home / "fleet-id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            self.home.mkdir(parents=True, exist_ok=True)
            drawn = path.with_name(f".fleet-id.{os.getpid()}")
            drawn.write_text(f"fleet-{secrets.token_hex(4)}\n")
            with suppress(FileExistsError):  # two commands starting together: the first link wins
                os.link(drawn, path)
            drawn.unlink()
            return path.read_text().strip()

    @property
    def uses_tracking_server(self) -> bool:
        return self.mlflow_tracking_uri.startswith(("http://", "https://"))

    def apply_runtime_environment(self) -> None:
        """Point Prefect and MLflow at edgewave's state and turn their telemetry off.

        Must run before prefect or mlflow is imported: both read these at import.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        relocated = relocate(self.home)  # a copied or moved home: its own paths, never the old home's
        if relocated:
            sys.stderr.write(f"edgewave: {relocated}\n")
        os.environ.setdefault("PREFECT_HOME", str(self.home / "prefect"))
        # MLflow's own HTTP retries default to ~4 minutes of backoff; keep them short so the
        # flow's task retries (which log what happens) do the waiting.
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
        # Without a server each command starts Prefect's temporary API; two of them starting at
        # once on a busy 2-core machine can need more than Prefect's default 20 s.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
        if not self.telemetry:
            os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            os.environ.setdefault("DO_NOT_TRACK", "1")


_ACTIVE: ContextVar[Settings | None] = ContextVar("edgewave_settings", default=None)


def active() -> Settings:
    """The settings of the flow being run: the caller's (`use`), else this process's environment."""
    settings = _ACTIVE.get()
    if settings is None:
        settings = Settings()
        settings.apply_runtime_environment()
    return settings


@contextmanager
def use(settings: Settings) -> Iterator[Settings]:
    """Run flows called inside this block with `settings` (the CLI after its overrides, a test)."""
    token = _ACTIVE.set(settings)
    try:
        yield settings
    finally:
        _ACTIVE.reset(token)
