"""One edge site in one process: the inference service and, with a site id, its agent.

Service and agent share a process on purpose: the swap is then an in-process call (no admin
endpoint on the network), the agent reads the same model slot the requests read, and a site
is one pid to start, watch and stop. The agent and the sample writer run in threads; requests
run on the uvicorn event loop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from edgewave.serving.agent import Agent
from edgewave.serving.app import SiteApp
from edgewave.serving.bundle import BundleError
from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import BundleCache, LoadedModel, ModelSlot
from edgewave.serving.oci import HintWatcher
from edgewave.serving.redact import RedactingFormatter, redact
from edgewave.serving.sampler import Sampler
from edgewave.serving.settings import EdgeSettings

log = logging.getLogger("edgewave.site")


@dataclass
class Site:
    settings: EdgeSettings
    slot: ModelSlot
    metrics: SiteMetrics
    sampler: Sampler
    app: SiteApp
    agent: Agent | None

    def start_background(self) -> None:
        self.sampler.start()
        if self.agent:
            self.agent.start()

    def stop_background(self) -> None:
        """Stop the agent, write what the sampler holds and ship it if the store is reachable; what
        cannot be shipped stays on the volume for the next start."""
        if self.agent:
            self.agent.stop()
        self.sampler.stop()
        if self.agent:
            with contextlib.suppress(ConnectionError, OSError):  # last chance to ship what the sampler just flushed
                self.agent.ship_windows()
        left = len(self.sampler.windows())
        log.info("stopped%s", f"; {left} sample window(s) kept on the volume for the next start" if left else "")


class _Terminated(Exception):
    """SIGTERM while serving (`docker stop`, a pod deleted, `edgewave down`)."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


def build_site(settings: EdgeSettings, bundle: Path | None = None, with_agent: bool = True) -> Site:
    """Wire a site: last-known-good model first, then (optionally) the agent that updates it.
    With both a bundle and an agent the site is image-pinned (a Kubernetes pod): it serves the
    bundle, and its agent ships windows and reports but never swaps the model."""
    site_dir = settings.site_dir()
    site_dir.mkdir(parents=True, exist_ok=True)
    metrics = SiteMetrics(settings.site_id, settings.fleet_id)

    def served(model: LoadedModel) -> None:
        metrics.serving(model.manifest.name, model.version, model.sha256)

    slot = ModelSlot(on_swap=served, on_failure=lambda reason: metrics.load_failures.labels(reason).inc(),
                     int8=settings.serve_int8, threads=settings.inference_threads)
    trusted = settings.trusted()
    if not trusted:
        log.warning("no trusted keys (folder %s, EDGEWAVE_TRUSTED_PUBLIC_KEYS unset): every bundle will be refused",
                    settings.trusted_keys)
    sampler = Sampler(site_dir / "samples", settings.site_id, settings.sample_fraction,
                      settings.sample_window_seconds, settings.sample_buffer_max_bytes, metrics,
                      image_bytes=settings.sample_image_bytes)
    app = SiteApp(slot, metrics, sampler, max_batch=settings.max_batch, max_body_bytes=settings.max_body_bytes,
                  body_seconds=settings.request_body_seconds,
                  reject_out_of_range=settings.reject_out_of_range)
    agent = None
    pinned = with_agent and bundle is not None  # the model comes from the image; the agent never swaps it
    if with_agent:
        cache = BundleCache(site_dir / "bundles", keep=settings.bundles_kept)
        remote = settings.desired_state_remote if pinned else settings.desired_state_url
        access = settings.remote_access()
        hint = (HintWatcher(settings.desired_state_hint, settings.site_id, access)
                if settings.desired_state_hint and remote else None)
        agent = Agent(settings.site_id, site_dir, remote, settings.monitoring_store, slot, cache, trusted, metrics,
                      sampler, settings.sync_interval_seconds, access, pinned=pinned, hint=hint,
                      full_sync_seconds=settings.desired_state_full_sync_seconds)
        if not pinned:
            agent.restore()
    if bundle is not None:
        slot.swap(bundle, trusted)
    return Site(settings, slot, metrics, sampler, app, agent)


def _agent_line(settings: EdgeSettings, agent: Agent | None) -> str:
    if agent is None:
        return ""
    if agent.pinned:
        return (f"; image-pinned: the agent ships windows to {redact(settings.monitoring_store)} every "
                f"{settings.sync_interval_seconds:g}s and never swaps the model")
    return f"; agent syncing {redact(settings.desired_state_url)} every {settings.sync_interval_seconds:g}s"


def run_site(settings: EdgeSettings, bundle: Path | None, with_agent: bool) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    # paramiko logs every SSH/SFTP connection at INFO: once a second per site, it buries the agent's own lines
    logging.getLogger("paramiko").setLevel(logging.WARNING)
    try:
        site = build_site(settings, bundle, with_agent)
    except BundleError:  # the slot logged the refusal once: which bundle, which check, what it found
        return 2
    current = site.slot.current
    log.info("site %s of fleet %s on http://%s:%d serving %s%s", settings.site_id, settings.fleet_id or "(none stated)",
             settings.serve_host, settings.serve_port,
             f"{current.manifest.name} v{current.version}" if current else "no model yet",
             _agent_line(settings, site.agent))
    config = uvicorn.Config(site.app, host=settings.serve_host, port=settings.serve_port, loop="uvloop",
                            http="httptools", lifespan="on", access_log=False, log_level="warning",
                            proxy_headers=False, server_header=False, date_header=False,
                            timeout_graceful_shutdown=10)
    # uvicorn stops serving on SIGTERM and then raises the signal again under the handler it found: with
    # Python's default one that kills the process before the site's last window is written and shipped
    # (samples were lost on every `docker stop`). This handler turns it into a clean stop; a second
    # signal while stopping takes the default again and stops at once.
    signal.signal(signal.SIGTERM, _terminated)
    site.start_background()
    try:
        uvicorn.Server(config).run()
    except (_Terminated, KeyboardInterrupt):
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        site.stop_background()
    return 0
