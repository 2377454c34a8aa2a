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
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgewave.serving.access import RemoteAccess
from edgewave.serving.background import Background
from edgewave.serving.bundle import BundleError, HashMismatchError, ManifestInvalidError, check_plain_files
from edgewave.serving.desired import DesiredState, DesiredStateError, parse_desired, site_file
from edgewave.serving.gitmirror import GitMirror
from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import BundleCache, ModelSlot
from edgewave.serving.oci import HintWatcher
from edgewave.serving.redact import redact
from edgewave.serving.sampler import Sampler
from edgewave.serving.transport import download_bundle, upload_confirmed

log = logging.getLogger("edgewave.agent")
APPLIED = "applied.json"


HEALTHY_JITTER = 0.2  # a healthy agent waits the interval ±20 %: sites started together drift apart


def backoff(failures: int, interval: float) -> float:
    """Wait before the next cycle: the interval ±20 % when healthy (sites started together, after a
    plant's power cut, say, would otherwise hit the Git host in step forever); after failures, 1 s
    doubling up to the interval, with jitter in [50 %, 100 %] so a fleet does not reconnect in step.
    Capped so a site converges within 1.2 intervals of the remote coming back."""
    if not failures:
        return interval * random.uniform(1 - HEALTHY_JITTER, 1 + HEALTHY_JITTER)
    step = min(interval, min(1.0, interval) * 2 ** (failures - 1))
    return step * random.uniform(0.5, 1.0)


REFUSAL_BACKOFF_MAX = 3600.0


@dataclass
class Refusal:
    """A bundle this site refused: tried again after a backoff, or at once if its digest changes."""

    reason: str
    at: float
    attempts: int

    def retry_at(self, interval: float) -> float:
        return self.at + min(REFUSAL_BACKOFF_MAX, interval * 2 ** self.attempts)


def owner_only(folder: Path) -> None:
    """A fetched bundle is readable by the site's own user only (its model is the plant's asset);
    plain files only, checked first (a chmod follows a link)."""
    check_plain_files(folder)
    folder.chmod(0o700)
    for path in folder.iterdir():
        path.chmod(0o600)


def write_durably(path: Path, text: str) -> None:
    """Write `path` whole or not at all, and on disk before returning (a power cut keeps one or the other)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


class Agent(Background):
    thread_name = "agent"
    join_timeout = 30.0

    def __init__(self, site_id: str, site_dir: Path, remote: str | None, monitoring_store: str, slot: ModelSlot,
                 cache: BundleCache, trusted: dict[str, Ed25519PublicKey], metrics: SiteMetrics,
                 sampler: Sampler | None, interval: float, access: RemoteAccess | None = None,
                 pinned: bool = False, clock: Callable[[], float] = time.time, hint: HintWatcher | None = None,
                 full_sync_seconds: float = 300.0) -> None:
        """`pinned`: the model comes from the image (a Kubernetes pod; Argo CD replaces pods to change
        it): the agent ships windows, reports and exposes its metrics, reads the desired state when
        a remote is given (to show what the fleet wants), and never swaps the model. `remote` None:
        no desired state is read at all. `clock`: wall time in seconds (when a refused bundle may be tried
        again, when a model was applied); a test hands in its own. `hint`: the desired state's change hint;
        with it, Git is fetched only when the hint's digest moved, or `full_sync_seconds` after the last fetch."""
        self.site_id = site_id
        self.clock = clock
        self.site_dir = site_dir
        self.access = access or RemoteAccess()
        self.pinned = pinned
        self.noted: int | None = None  # the desired version an image-pinned pod last said it does not follow
        self.mirror = GitMirror(remote, site_dir / "desired-state.git", self.access) if remote else None
        self.hint = hint
        self.full_sync_seconds = full_sync_seconds
        self.hint_seen: str | None = None  # the hint's digest just before the last fetch
        self.fetched_at = float("-inf")
        self.hint_failing = False
        self.monitoring_store = monitoring_store
        self.slot = slot
        self.cache = cache
        self.trusted = trusted
        self.metrics = metrics
        self.sampler = sampler
        self.interval = interval
        self.failures = 0
        self.refused: dict[tuple, Refusal] = {}  # (version, sha256, bundle URL, rollback mark) → why
        super().__init__()

    # -- last-known-good ------------------------------------------------------------------
    def restore(self) -> None:
        """At start, serve the last applied bundle from the local cache, before any network.

        A state file that cannot be read is set aside (renamed, counted), not a crash: the site
        then serves the newest cached bundle that still verifies.
        """
        applied = self._applied_version()
        candidates = [applied] if applied is not None else []
        candidates += [v for v in reversed(self.cache.versions()) if v != applied]  # newest first
        for version in candidates:
            try:
                self.slot.swap(self.cache.folder(version), self.trusted)
            except (BundleError, OSError) as exc:
                log.error("cached bundle v%s did not load: %s", version, exc)
                continue
            self.metrics.agent_applied_version.set(version)
            if version != applied:
                log.warning("serving v%s, the newest cached bundle that verifies (last applied: %s)", version,
                            f"v{applied}" if applied is not None else "unknown")
            return

    def _applied_version(self) -> int | None:
        record = self.site_dir / APPLIED
        if not record.exists():
            return None
        try:
            return int(json.loads(record.read_text())["version"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            aside = record.with_name(f"{APPLIED}.corrupt-{int(self.clock())}")
            record.rename(aside)
            self.metrics.agent_errors.labels("state_corrupt").inc()
            log.error("%s was unreadable (%s): set aside as %s", record, type(exc).__name__, aside.name)
            return None

    def _record_applied(self, desired: DesiredState) -> None:
        write_durably(self.site_dir / APPLIED, json.dumps({
            "version": desired.version, "sha256": desired.sha256, "rollout_id": desired.rollout_id,
            "applied_at": self.clock()}))
        self.metrics.agent_applied_version.set(desired.version)

    def _refuse(self, key: tuple, kind: str, reason: str) -> None:
        previous = self.refused.get(key)
        refusal = Refusal(reason, self.clock(), (previous.attempts if previous else 0) + 1)
        self.refused[key] = refusal
        self.metrics.agent_errors.labels(kind).inc()
        log.error("not applying v%d, still serving %s: %s (tried again in %.0fs, or when its digest changes)",
                  key[0], self._serving(), reason, refusal.retry_at(self.interval) - refusal.at)

    # -- one cycle -------------------------------------------------------------------------
    def apply(self, desired: DesiredState) -> bool:
        """Make the served model match `desired`; True if it now does."""
        current = self.slot.current
        if current is not None and current.version == desired.version and current.sha256 == desired.sha256:
            return True
        key = (desired.version, desired.sha256, desired.bundle_url, desired.rollback)
        refusal = self.refused.get(key)
        if refusal is not None and self.clock() < refusal.retry_at(self.interval):
            return False
        if current is not None and desired.version < current.version and not desired.rollback:
            self._refuse(key, "downgrade_refused", f"v{desired.version} is older than the served v{current.version} "
                         "and the desired state does not mark it as a rollback")
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
                owner_only(partial)
            except BundleError as exc:  # the store answered with something no site applies: a refusal, not an outage
                shutil.rmtree(partial, ignore_errors=True)
                self.metrics.load_failures.labels(type(exc).__name__).inc()
                self._refuse(key, "bundle_refused", f"{type(exc).__name__}: {exc}")
                return False
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
            self.cache.discard(desired.version)  # a bad bundle is no rollback target; a retry fetches it again
            self._refuse(key, "bundle_refused", f"{type(exc).__name__}: {exc}")
            return False
        self.refused.pop(key, None)
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
        if self.mirror is None:  # a site without EDGEWAVE_DESIRED_STATE_REMOTE has nothing to follow
            return None
        digest = self._hint_digest()
        now = self.clock()
        if (digest is not None and digest == self.hint_seen and self.mirror.head is not None
                and now - self.fetched_at < self.full_sync_seconds):
            commit = self.mirror.head  # nothing moved: the commit fetched last time still holds
            self.metrics.agent_syncs.labels("unchanged").inc()
        else:
            commit = self.mirror.sync()
            self.hint_seen, self.fetched_at = digest, now  # the digest read before the fetch: never newer than it
            self.metrics.agent_syncs.labels("fetched").inc()
        text = self.mirror.read(site_file(self.site_id))
        desired = parse_desired(text, f"{site_file(self.site_id)} at {commit[:8]}", self.site_id) if text else None
        log.debug("desired state at %s: %s", commit[:8], desired)
        return desired

    def _hint_digest(self) -> str | None:
        """The change hint's digest, or None (no hint, nothing published yet, the registry not reached):
        then Git is fetched as without a hint. A hint is a saving, never a reason not to sync."""
        if self.hint is None:
            return None
        try:
            digest = self.hint.digest()
        except ConnectionError as exc:
            self.metrics.agent_errors.labels("hint_unreachable").inc()
            if not self.hint_failing:  # said once per outage, not every cycle
                log.warning("%s; fetching the desired state every cycle until it answers", exc)
            self.hint_failing = True
            return None
        if self.hint_failing:
            log.info("change hint %s answers again", self.hint.ref.target)
        self.hint_failing = False
        return digest

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
            desired = self.sync_desired_state() if self.mirror is not None else None
            if desired is not None:
                self.metrics.agent_desired_version.set(desired.version)
                if self.pinned:
                    self._note_pinned(desired)
                else:
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

    def _note_pinned(self, desired: DesiredState) -> None:
        """An image-pinned pod says once per desired version that it does not follow it itself."""
        current = self.slot.current
        if current is not None and desired.version != current.version and desired.version != self.noted:
            log.info("image-pinned: the desired state names v%d; this pod serves v%d from its image until its "
                     "Deployment is replaced (Argo CD)", desired.version, current.version)
        self.noted = desired.version

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

