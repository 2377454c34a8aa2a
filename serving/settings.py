"""What an edge site reads from its environment: `EDGEWAVE_*` variables and an optional `.env`.

The edge's own settings class, so a site needs nothing of the control plane; the control
plane's `Settings` (tasks/platform/settings.py) builds on it and adds what only it reads.
Built once at the edge of the program and passed down; nothing reads the environment at
import time.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import Field, SecretStr, computed_field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgewave.serving.access import SECRETS_DIR, RemoteAccess, write_secret
from edgewave.serving.redact import redact

SITE_ID_PATTERN = r"^[A-Za-z0-9][\w.-]*$"


class EdgeSettings(BaseSettings):
    """An edge site's configuration: where it listens, what it samples, where it syncs from."""

    model_config = SettingsConfigDict(env_prefix="EDGEWAVE_", env_file=".env", extra="ignore")

    home: Path = Field(default=Path(".edgewave"), description="Folder holding all embedded state.")
    trusted_keys_dir: Path | None = Field(
        default=None, description="Folder of trusted public keys (*.pub) for bundle verification."
    )
    trusted_public_keys: str | None = Field(
        default=None, description="Trusted public keys as PEM text (one or more), e.g. from a container's environment.")
    site_id: str = Field(default="local", pattern=SITE_ID_PATTERN, description="This site's id.")
    fleet_id: str | None = Field(
        default=None, pattern=SITE_ID_PATTERN, description="The fleet (control plane) this site belongs to. The site "
        "states it with its id on /v1/site and in /metrics; the control plane refuses a site that states another.")
    serve_host: str = Field(default="127.0.0.1", description="Address the site's HTTP service binds to.")
    serve_port: int = Field(default=8080, ge=0, le=65535)
    max_batch: int = Field(default=1_000, ge=1, description="Rows per request above which the answer is 413.")
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, description="Request bodies above this get 413.")
    request_body_seconds: float = Field(default=10.0, gt=0, description="A request body not received whole within "
                                        "this gets 408 and its connection is closed.")
    reject_out_of_range: bool = Field(
        default=False, description="Refuse (422) rows outside the training range instead of only counting them."
    )
    sample_fraction: float = Field(default=0.1, ge=0, le=1, description="Share of requests kept for drift checks.")
    sample_window_seconds: float = Field(default=60.0, gt=0, description="Length of one sample window file.")
    sample_buffer_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, description="Disk the site may use for unshipped sample windows."
    )
    serve_int8: bool = Field(
        default=False, description="Serve a bundle's int8 variant when it ships one (kept by the release only "
        "where its PR-AUC held); the model's hash and version stay the bundle's.")
    inference_threads: int = Field(
        default=1, ge=1, le=64, description="ONNX Runtime threads per model call. One leaves the other cores "
        "to the event loop, which decodes and answers requests meanwhile; an image model on a box with cores to "
        "spare answers sooner with more (README, 'Visual inspection').")
    sample_image_bytes: int = Field(
        default=1_000_000, ge=0, description="An image model's sampled images kept per window (encoded bytes), the "
        "ones nearest the decision threshold first: what people label. 0: none.")
    desired_state_remote: str | None = Field(
        default=None, description="Git remote holding sites/<site>.yaml (ssh://, https://, file://, a path); "
        "default a bare repository under home."
    )
    monitoring_store_url: str | None = Field(
        default=None, description="fsspec URL sample windows are shipped to; default a folder under home."
    )
    sync_interval_seconds: float = Field(default=10.0, gt=0, description="How often the agent syncs (each wait "
                                         "jittered by ±20 %, so a fleet never syncs in step).")
    desired_state_hint: str | None = Field(
        default=None, description="oci://<registry>/<repository>:<tag>: the control plane moves the tag "
        "<tag>-<site> after every desired-state commit that changes that site's file; the agent asks its own tag's "
        "digest (one HTTP HEAD) and fetches Git only when it moved. Git stays the source of truth; unset, the agent "
        "fetches every interval.")
    desired_state_full_sync_seconds: float = Field(
        default=300.0, gt=0, description="With a change hint, the agent still fetches Git at least this often (a hint "
        "that was not updated delays a change by this much at most).")
    bundles_kept: int = Field(default=3, ge=1, description="Bundles a site keeps on disk for local rollback.")

    # --- credentials for the remotes (environment or files; never in a URL, log or artifact) ---
    ssh_key_path: Path | None = Field(default=None, description="SSH private key for ssh:// Git remotes and sftp:// stores.")
    ssh_key: SecretStr | None = Field(default=None, description="The same key as text (written to a 0600 file under home).")
    ssh_known_hosts_path: Path | None = Field(default=None, description="known_hosts the SSH host key is checked against.")
    ssh_known_hosts: str | None = Field(default=None, description="The same as text (for containers).")
    git_username: str = Field(default="x-access-token", description="User name sent with EDGEWAVE_GIT_TOKEN over HTTPS.")
    git_token: SecretStr | None = Field(default=None, description="Token for https:// Git remotes (GitHub, GitLab, Gitea).")
    git_token_file: Path | None = Field(default=None, description="File holding that token.")
    registry_username: str | None = Field(default=None, description="OCI registry user (bundles as artifacts).")
    registry_password: SecretStr | None = Field(default=None, description="OCI registry password or token.")
    registry_password_file: Path | None = Field(default=None, description="File holding that password.")
    registry_plain_http: bool | None = Field(
        default=None, description="Talk plain HTTP to the OCI registry; default: only for 127.0.0.1 / localhost.")

    @model_validator(mode="after")
    def _absolute_home(self) -> EdgeSettings:
        self.home = self.home.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _hint_is_a_tag(self) -> EdgeSettings:
        if self.desired_state_hint is not None:
            from edgewave.serving.oci import site_hint

            try:
                site_hint(self.desired_state_hint, self.site_id)
            except ValueError as exc:
                raise ValueError(f"desired_state_hint: {exc}") from None
        return self

    @model_validator(mode="after")
    def _no_credentials_in_urls(self) -> EdgeSettings:
        """A URL is logged, shown and recorded (MLflow tags, desired state): credentials go elsewhere."""
        for name, value in self:
            if isinstance(value, str) and "://" in value and redact(value) != value:
                raise ValueError(f"{name}: the URL carries a credential, which would end up in logs, MLflow and "
                                 "Git; give it as EDGEWAVE_GIT_TOKEN(_FILE), EDGEWAVE_REGISTRY_PASSWORD(_FILE), "
                                 "EDGEWAVE_SSH_KEY(_PATH), the AWS_* environment or MLFLOW_TRACKING_PASSWORD instead")
        return self

    @property
    def trusted_keys(self) -> Path:
        """The folder of public keys (*.pub) this site trusts: EDGEWAVE_TRUSTED_KEYS_DIR, else its own."""
        return self.trusted_keys_dir or self.site_dir() / "trusted-keys"

    def trusted(self) -> dict[str, Ed25519PublicKey]:
        """Every public key given to this site, by id: the folder's and EDGEWAVE_TRUSTED_PUBLIC_KEYS'.
        Never the signer's own key folder, unless that is what it was given."""
        from edgewave.serving.bundle import load_trusted_keys, parse_public_keys

        keys = load_trusted_keys(self.trusted_keys) if self.trusted_keys.exists() else {}
        if self.trusted_public_keys:
            keys.update(parse_public_keys(self.trusted_public_keys, "EDGEWAVE_TRUSTED_PUBLIC_KEYS"))
        return keys

    @computed_field  # type: ignore[prop-decorator]
    @property
    def desired_state_url(self) -> str:
        return self.desired_state_remote or str(self.home / "desired-state.git")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def monitoring_store(self) -> str:
        return self.monitoring_store_url or (self.home / "monitoring").as_uri()

    def remote_access(self) -> RemoteAccess:
        """Credentials for Git, SFTP and the registry; key and known_hosts text become 0600 files under home."""
        secrets = self.home / SECRETS_DIR
        key = self.ssh_key_path or (write_secret(secrets, "ssh_key", self.ssh_key.get_secret_value())
                                    if self.ssh_key else None)
        known = self.ssh_known_hosts_path or (write_secret(secrets, "known_hosts", self.ssh_known_hosts)
                                              if self.ssh_known_hosts else None)
        return RemoteAccess(ssh_key=key, known_hosts=known, git_username=self.git_username,
                            git_token=_secret(self.git_token, self.git_token_file),
                            registry_username=self.registry_username,
                            registry_password=_secret(self.registry_password, self.registry_password_file),
                            registry_plain_http=self.registry_plain_http)

    def site_dir(self, site_id: str | None = None) -> Path:
        """A site's own state: bundle cache, sample windows, desired-state checkout."""
        return self.home / "sites" / (site_id or self.site_id)


def _secret(value: SecretStr | None, path: Path | None) -> str | None:
    if value is not None:
        return value.get_secret_value()
    if path is not None:
        return path.read_text().strip()
    return None
