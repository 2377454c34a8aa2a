"""An agent's own state with real signed bundles: refusals are retried, downgrades need a
rollback mark, a corrupt record is set aside, and a full state volume loses samples only
with a count and a reason while the site keeps serving."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from edgewave.serving.agent import APPLIED, Agent
from edgewave.serving.bundle import BundleUnsafeError, load_trusted_keys, verify_bundle
from edgewave.serving.desired import DesiredState
from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import BundleCache, ModelSlot
from edgewave.serving.sampler import window_rows
from edgewave.tasks.data.ai4i import FEATURES
from tests.helpers import free_port, post_json, start_site, stop, wait_for


class Clock:
    """Wall time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def agent(bundles, folder: Path, interval: float = 10.0, clock: Clock | None = None) -> Agent:
    metrics = SiteMetrics("s1")
    slot = ModelSlot(on_swap=lambda m: metrics.serving(m.manifest.name, m.version, m.sha256))
    return Agent("s1", folder, str(folder / "remote"), (folder / "store").as_uri(), slot,
                 BundleCache(folder / "bundles"), load_trusted_keys(bundles.home / "keys"), metrics, None, interval,
                 clock=clock or Clock())


def desired(bundles, bundle: Path, version: int, **extra) -> DesiredState:
    return DesiredState(site="s1", model="machine-failure", version=version, bundle_url=bundle.as_uri(),
                        sha256=bundles.sha(bundle), rollout_id="ro-t", **extra)


def errors(a: Agent, kind: str) -> float:
    return a.metrics.agent_errors.labels(kind)._value.get()


def test_a_refused_bundle_is_retried_after_a_backoff_or_at_once_under_a_new_digest(bundles, tmp_path: Path) -> None:
    clock = Clock()
    a = agent(bundles, tmp_path, interval=10.0, clock=clock)
    untrusted = desired(bundles, bundles.foreign, 3)
    assert not a.apply(untrusted) and errors(a, "bundle_refused") == 1
    clock.now += 19.0  # the backoff after one refusal: the interval x 2
    assert not a.apply(untrusted) and errors(a, "bundle_refused") == 1, "within the backoff it is not tried again"
    clock.now += 2.0
    assert not a.apply(untrusted) and errors(a, "bundle_refused") == 2, "after the backoff it is tried again"
    moved = untrusted.model_copy(update={"bundle_url": bundles.v1.as_uri(), "version": 1, "sha256": bundles.sha(bundles.v1)})
    assert a.apply(moved), "a new digest is tried at once"
    assert "UnknownKeyError" in next(iter(a.refused.values())).reason


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_signed_bundle_holding_a_link_is_refused_never_read_through_and_is_no_outage(bundles, tmp_path: Path,
                                                                                      link: str) -> None:
    """A correctly signed `file://` bundle folder with `extra.txt` linked to a file outside it."""
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$never-a-sites-to-read")
    folder = tmp_path / "bundle"
    shutil.copytree(bundles.v1, folder)
    if link == "symbolic":
        (folder / "extra.txt").symlink_to(secret)
    else:
        os.link(secret, folder / "extra.txt")
    with pytest.raises(BundleUnsafeError, match="extra.txt"):  # `edgewave serve --bundle` refuses it too
        verify_bundle(folder, load_trusted_keys(bundles.home / "keys"))
    site = tmp_path / "site"
    a = agent(bundles, site)
    assert not a.apply(desired(bundles, folder, 1)), "refused"
    assert errors(a, "bundle_refused") == 1 and errors(a, "remote_unreachable") == 0, "a refusal, not an outage"
    assert a.metrics.load_failures.labels("BundleUnsafeError")._value.get() == 1
    reason = next(iter(a.refused.values())).reason
    assert "BundleUnsafeError" in reason and "extra.txt" in reason, reason
    copied = [p for p in site.rglob("*") if p.is_file() and "never-a-sites-to-read" in p.read_text(errors="replace")]
    assert not copied, f"the link's target was copied: {copied}"

    assert a.apply(desired(bundles, bundles.v1, 1))  # a plain bundle: cached readable by the site's user only
    cached = a.cache.folder(1)
    assert cached.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in cached.iterdir()} == {p.name: 0o600 for p in bundles.v1.iterdir()}


def test_a_lower_version_is_applied_only_when_the_desired_state_marks_a_rollback(bundles, tmp_path: Path) -> None:
    a = agent(bundles, tmp_path)
    assert a.apply(desired(bundles, bundles.v2, 2))
    assert not a.apply(desired(bundles, bundles.v1, 1)), "a downgrade nobody marked"
    assert errors(a, "downgrade_refused") == 1 and a.slot.current.version == 2
    assert a.apply(desired(bundles, bundles.v1, 1, rollback=True)) and a.slot.current.version == 1


def test_a_corrupt_applied_record_is_set_aside_and_the_newest_cached_bundle_serves(bundles, tmp_path: Path) -> None:
    first = agent(bundles, tmp_path)
    assert first.apply(desired(bundles, bundles.v1, 1)) and first.apply(desired(bundles, bundles.v2, 2))
    (tmp_path / APPLIED).write_text('{"version": ')  # a power cut mid-write, say
    restarted = agent(bundles, tmp_path)
    restarted.restore()
    assert restarted.slot.current is not None and restarted.slot.current.version == 2
    assert errors(restarted, "state_corrupt") == 1
    assert not (tmp_path / APPLIED).exists() and list(tmp_path.glob(f"{APPLIED}.corrupt-*"))


@pytest.fixture
def small_volume(tmp_path: Path):
    """A 3 MB tmpfs as a site's whole state volume (needs root to mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs as the site's state volume needs root")
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0755", "tmpfs", str(volume)], check=True)
    yield volume
    subprocess.run(["umount", "-l", str(volume)], check=False)


def metric(port: int, name: str) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {line.split(" ")[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")}


def test_a_site_on_a_full_volume_keeps_serving_and_counts_every_lost_sample(bundles, small_volume: Path,
                                                                           tmp_path: Path) -> None:
    home = small_volume / "home"
    home.mkdir()
    (home / "keys").mkdir()
    for key in (bundles.home / "keys").glob("*.pub"):
        (home / "keys" / key.name).write_bytes(key.read_bytes())
    port = free_port()
    site = start_site(home, port, tmp_path / "site.log", "--bundle", str(bundles.v1),
                      EDGEWAVE_SAMPLE_FRACTION="1", EDGEWAVE_SAMPLE_WINDOW_SECONDS="0.3")
    try:
        row = {"air_temperature_k": 300.0, "process_temperature_k": 310.0, "rotational_speed_rpm": 1500.0,
               "torque_nm": 40.0, "tool_wear_min": 100.0, "product_quality": 1.0}
        assert set(row) == set(FEATURES)
        body = json.dumps({"instances": [row] * 50}).encode()
        statuses = []
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        deadline = time.monotonic() + 90  # ends early once the volume is full; a loaded CI run fills it slowly
        while time.monotonic() < deadline:
            statuses.append(post_json(conn, "/v1/predict", body)[0])
            dropped = metric(port, "edgewave_samples_dropped_total")
            if sum(dropped.values()) > 5000 and len(statuses) > 200:
                break
        conn.close()

        def accounted() -> bool:  # the writer has closed the last window: each sampled row written or dropped
            counts = metric(port, "edgewave_")
            failed = counts.get('edgewave_samples_dropped_total{reason="write_failed"}', 0.0)
            return counts["edgewave_samples_written_total"] + failed == counts["edgewave_predicted_rows_total"]
        wait_for(accounted, 30, "the sampler to account for every sampled row")
        rows = metric(port, "edgewave_predicted_rows_total")["edgewave_predicted_rows_total"]
        written = metric(port, "edgewave_samples_written_total")["edgewave_samples_written_total"]
        dropped = metric(port, "edgewave_samples_dropped_total")
    finally:
        stop(site)
    assert set(statuses) == {200}, "serving is unaffected by the full volume"
    reasons = {key.split('reason="')[1].rstrip('"}'): value for key, value in dropped.items() if value}
    assert set(reasons) <= {"disk_space", "write_failed"} and sum(reasons.values()) > 0, reasons
    before_writing = reasons.get("write_failed", 0)  # never written
    after_writing = reasons.get("disk_space", 0)  # written, then removed to make room
    on_disk = sum(window_rows(p) for p in (home / "sites" / "local" / "samples").glob("*.parquet"))
    assert written + before_writing == rows, "every sampled row was written or counted as dropped"
    assert written - after_writing == on_disk, "every written row is still on disk or counted as dropped"
