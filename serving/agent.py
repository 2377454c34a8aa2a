"""The site agent: makes this site run what Git says, and ships its drift samples.

Each cycle: fetch the desired-state repo, apply `sites/<site>.yaml` (a cached bundle is a
local rollback, anything else is downloaded, verified against the file's sha256 and swapped
in), then upload finished sample windows, deleting each only after the store confirms it.
Unreachable remote or store: the site keeps serving the last-known-good model, samples stay
buffered (bounded), `edgewave_agent_offline` is 1 and the next try backs off with jitter.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgewave.serving.access import RemoteAccess
from edgewave.serving.background import Background
from edgewave.serving.bundle import BundleError, HashMismatchError, ManifestInvalidError
from edgewave.serving.desired import DesiredState, DesiredStateError, parse_desired, site_file
from edgewave.serving.gitmirror import GitMirror
from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import BundleCache, ModelSlot
from edgewave.serving.redact import redact
from edgewave.serving.sampler import Sampler
from edgewave.serving.transport import download_bundle, upload_confirmed

log = logging.getLogger("edgewave.agent")
APPLIED = "applied.json"


def backoff(failures: int, interval: float) -> float:
    """Wait before the next cycle: the interval when healthy; after failures, 1 s doubling up to
    the interval, with jitter in [50 %, 100 %] so a fleet does not reconnect in step. Capped at
    the interval so a site converges within one interval of the remote coming back."""
    if not failures:
        return interval
    step = min(interval, min(1.0, interval) * 2 ** (failures - 1))
    return step * random.uniform(0.5, 1.0)


class Agent(Background):
    thread_name = "agent"
    join_timeout = 30.0

    def __init__(self, site_id: str, site_dir: Path, remote: str, monitoring_store: str, slot: ModelSlot,
                 cache: BundleCache, trusted: dict[str, Ed25519PublicKey], metrics: SiteMetrics,
                 sampler: Sampler | None, interval: float, access: RemoteAccess | None = None) -> None:
        self.site_id = site_id
        self.site_dir = site_dir
        self.access = access or RemoteAccess()
        self.mirror = GitMirror(remote, site_dir / "desired-state.git", self.access)
        self.monitoring_store = monitoring_store
        self.slot = slot
        self.cache = cache
        self.trusted = trusted
        self.metrics = metrics
        self.sampler = sampler
        self.interval = interval
        self.failures = 0
        self.refused: set[tuple[int, str]] = set()
        super().__init__()

    # -- last-known-good ------------------------------------------------------------------
    def restore(self) -> None:
        """At start, serve the last applied bundle from the local cache, before any network."""
        record = self.site_dir / APPLIED
        if not record.exists():
            return
        version = json.loads(record.read_text())["version"]
        try:
            self.slot.swap(self.cache.folder(version), self.trusted)
            self.metrics.agent_applied_version.set(version)
        except (BundleError, OSError) as exc:
            log.error("last applied bundle v%s did not load from cache: %s", version, exc)

    def _record_applied(self, desired: DesiredState) -> None:
        tmp = self.site_dir / f".{APPLIED}.tmp"
        tmp.write_text(json.dumps({"version": desired.version, "sha256": desired.sha256,
                                   "rollout_id": desired.rollout_id, "applied_at": time.time()}))
        tmp.replace(self.site_dir / APPLIED)
        self.metrics.agent_applied_version.set(desired.version)

    # -- one cycle -------------------------------------------------------------------------
    def apply(self, desired: DesiredState) -> bool:
        """Make the served model match `desired`; True if it now does."""
        current = self.slot.current
        if current is not None and current.version == desired.version and current.sha256 == desired.sha256:
            return True
        key = (desired.version, desired.sha256)
        if key in self.refused:
            return False
        folder = self.cache.folder(desired.version)
        cached = folder.exists()
        if not cached:
            log.info("downloading v%d from %s (rollout %s)", desired.version, redact(desired.bundle_url),
                     desired.rollout_id)
            partial = folder.with_name(f".{folder.name}.partial")  # never mistaken for a cached bundle
            shutil.rmtree(partial, ignore_errors=True)
            try:
                download_bundle(desired.bundle_url, partial, self.access)
            except OSError as exc:  # store unreachable or bundle not there (yet): retry later
                shutil.rmtree(partial, ignore_errors=True)
                raise ConnectionError(redact(f"bundle v{desired.version} not fetched from {desired.bundle_url}: "
                                             f"{exc}")) from exc
            except ValueError as exc:  # a bundle URL the site cannot use (a tag instead of a digest, say)
                shutil.rmtree(partial, ignore_errors=True)
                raise DesiredStateError(redact(f"{site_file(self.site_id)}: bundle_url: {exc}")) from None
            partial.rename(folder)
        try:
            self._check_desired_hash(folder, desired)
            self.slot.swap(folder, self.trusted)  # verifies, loads, warms up; counts its own refusals
        except BundleError as exc:
            self.refused.add(key)
            self.metrics.agent_errors.labels("bundle_refused").inc()
            log.error("not applying v%d, still serving %s: %s", desired.version, self._serving(), exc)
            self.cache.discard(desired.version)  # a bad bundle is no rollback target
            return False
        self.cache.touch(desired.version)
        self.cache.prune(protect=desired.version)
        self._record_applied(desired)
        log.info("applied v%d%s (rollout %s)", desired.version, " from the local cache" if cached else "",
                 desired.rollout_id)
        return True

    def _check_desired_hash(self, folder: Path, desired: DesiredState) -> None:
        """The bundle must be the one the desired state names, not just any signed bundle."""
        try:
            manifest_sha = json.loads((folder / "bundle.json").read_text())["model"]["sha256"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            self.metrics.load_failures.labels("ManifestInvalidError").inc()
            raise ManifestInvalidError(f"{folder}: unreadable bundle.json: {exc}") from None
        if manifest_sha != desired.sha256:
            self.metrics.load_failures.labels("HashMismatchError").inc()
            raise HashMismatchError(f"{folder}: model sha256 {manifest_sha} is not the desired {desired.sha256}")

    def sync_desired_state(self) -> DesiredState | None:
        commit = self.mirror.sync()
        text = self.mirror.read(site_file(self.site_id))
        desired = parse_desired(text, f"{site_file(self.site_id)} at {commit[:8]}", self.site_id) if text else None
        log.debug("desired state at %s: %s", commit[:8], desired)
        return desired

    def ship_windows(self) -> int:
        """Upload finished windows, oldest first; each is deleted only after a confirmed upload."""
        if self.sampler is None:
            return 0
        shipped = 0
        windows = self.sampler.windows()
        for window in windows:
            upload_confirmed(window, self.monitoring_store, f"{self.site_id}/{window.name}", self.access)
            window.unlink()
            shipped += 1
            self.metrics.windows_shipped.inc()
        self.metrics.buffered_windows.set(len(windows) - shipped)
        return shipped

    def cycle(self) -> bool:
        """One sync; True when both the remote and the store were reached."""
        reached = True
        try:
            desired = self.sync_desired_state()
            if desired is not None:
                self.apply(desired)
            self.metrics.agent_last_sync.set(time.time())
        except ConnectionError as exc:
            reached = False
            self.metrics.agent_errors.labels("remote_unreachable").inc()
            log.warning("desired-state remote unreachable, still serving %s: %s", self._serving(), exc)
        except DesiredStateError as exc:
            self.metrics.agent_errors.labels("desired_state_invalid").inc()
            log.error("%s", exc)
        try:
            self.ship_windows()
        except (ConnectionError, OSError) as exc:
            reached = False
            self.metrics.agent_errors.labels("store_unreachable").inc()
            log.warning("monitoring store unreachable, keeping samples buffered: %s", exc)
        self.failures = 0 if reached else self.failures + 1
        self.metrics.agent_offline.set(0 if reached else 1)
        return reached

    def _serving(self) -> str:
        current = self.slot.current
        return f"v{current.version}" if current else "no model"

    # -- loop ------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.cycle()
            except Exception:  # never let the agent die: the site must keep converging
                log.exception("agent cycle failed")
                self.failures += 1
            self._stop.wait(backoff(self.failures, self.interval))

