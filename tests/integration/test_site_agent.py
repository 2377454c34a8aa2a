"""A real site process with its agent: hot swap under load, refusals, offline autonomy."""

from __future__ import annotations

import http.client
import json
import shutil
import threading
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq

from edgewave.tasks.data.ai4i import FEATURES
from tests.helpers import DesiredRepo, free_port, post_json, start_site, stop, wait_for

SITE = "plant-a-line-1"


def readyz(port: int) -> dict:
    try:
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).read())
    except OSError:
        return {}


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def site_home(bundles, tmp_path: Path) -> Path:
    """A site's own home that trusts the release key (and only it)."""
    home = tmp_path / "site-home"
    shutil.copytree(bundles.home / "keys", home / "keys", ignore=shutil.ignore_patterns("*.key"))
    return home


def sampling_site(bundles, tmp_path: Path, interval: float, window: float):
    """A site on v1 of a local desired-state repo that samples every row and ships windows of `window`
    seconds to a local store; returns (process, port, log, repo, store)."""
    repo = DesiredRepo(tmp_path / "remote" / "desired")
    store = tmp_path / "remote" / "monitoring"
    store.mkdir()
    repo.set(SITE, 1, bundles.v1, bundles.sha(bundles.v1))
    port = free_port()
    log = tmp_path / "site.log"
    site = start_site(site_home(bundles, tmp_path), port, log, "--site", SITE,
                      EDGEWAVE_DESIRED_STATE_REMOTE=str(repo.path), EDGEWAVE_MONITORING_STORE_URL=store.as_uri(),
                      EDGEWAVE_SYNC_INTERVAL_SECONDS=str(interval), EDGEWAVE_SAMPLE_FRACTION="1",
                      EDGEWAVE_SAMPLE_WINDOW_SECONDS=str(window))
    return site, port, log, repo, store


def shipped_ids(store: Path) -> list[str]:
    """The sample ids of every window the site shipped to the store."""
    return [i for path in sorted((store / SITE).glob("*.parquet"))
            for i in pq.read_table(path, columns=["sample_id"]).column(0).to_pylist()]


class Load:
    """N client threads posting single rows until stopped; records every (status, version)."""

    def __init__(self, port: int, body: bytes, threads: int = 2) -> None:
        self.port, self.body = port, body
        self.results: list[list[tuple[int, int | None]]] = [[] for _ in range(threads)]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while not self._stop.is_set():
            status, body = post_json(conn, "/v1/predict", self.body)
            self.results[i].append((status, body.get("model_version")))
        conn.close()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def answered(self, version: int) -> int:
        """How many requests every thread has had answered by `version` so far."""
        return sum(1 for thread in self.results for _, v in list(thread) if v == version)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=15)


def test_hot_swap_under_load_drops_nothing_and_refuses_bad_bundles(bundles, split, tmp_path: Path) -> None:
    repo = DesiredRepo(tmp_path / "desired")
    repo.set(SITE, 1, bundles.v1, bundles.sha(bundles.v1))
    port = free_port()
    log = tmp_path / "site.log"
    site = start_site(site_home(bundles, tmp_path), port, log, "--site", SITE,
                      EDGEWAVE_DESIRED_STATE_REMOTE=str(repo.path), EDGEWAVE_SYNC_INTERVAL_SECONDS="0.5",
                      EDGEWAVE_SAMPLE_FRACTION="0")
    try:
        wait_for(lambda: readyz(port).get("model_version") == 1, 20, "site to apply v1")
        body = json.dumps({"instances": [dict(zip(FEATURES, map(float, split.x_test[0])))]}).encode()
        with Load(port, body, threads=3) as load:
            wait_for(lambda: load.answered(1) >= 500, 120, "500 requests answered by v1 before the swap")
            repo.set(SITE, 2, bundles.v2, bundles.sha(bundles.v2), rollout_id="ro-swap")
            wait_for(lambda: readyz(port).get("model_version") == 2, 60, "site to swap to v2")
            wait_for(lambda: load.answered(2) >= 500, 120, "500 requests answered by v2 after the swap")
        all_results = [r for thread in load.results for r in thread]
        assert len(all_results) > 1000, "load too thin to prove anything"
        assert {status for status, _ in all_results} == {200}
        for thread in load.results:
            versions = [v for _, v in thread]
            changes = [(a, b) for a, b in zip(versions, versions[1:]) if a != b]
            assert changes == [(1, 2)], f"version changed {changes} in one client"

        # A bundle signed by a key the site does not trust, then a corrupted one: both refused.
        repo.set(SITE, 3, bundles.foreign, bundles.sha(bundles.foreign), rollout_id="ro-foreign")
        wait_for(lambda: metric(port, 'edgewave_model_load_failures_total{reason="UnknownKeyError"}') >= 1, 20,
                 "the foreign bundle to be refused")
        repo.set(SITE, 4, bundles.corrupt, bundles.sha(bundles.corrupt), rollout_id="ro-corrupt")
        wait_for(lambda: metric(port, 'edgewave_model_load_failures_total{reason="HashMismatchError"}') >= 1, 20,
                 "the corrupt bundle to be refused")
        assert readyz(port)["model_version"] == 2
        status, answer = post_json(http.client.HTTPConnection("127.0.0.1", port), "/v1/predict", body)
        assert (status, answer["model_version"]) == (200, 2)
        assert metric(port, "edgewave_model_swaps_total") == 2
        wait_for(lambda: "refused bundle" in log.read_text() and "still serving v2" in log.read_text(), 20,
                 "the site's log to say it refused the bundles and still serves v2")

        # Instant local rollback: v1 is still in the cache, nothing is downloaded.
        repo.set(SITE, 1, bundles.v1, bundles.sha(bundles.v1), rollout_id="rb-test", rollback=True)
        wait_for(lambda: readyz(port).get("model_version") == 1, 20, "rollback to v1")
        # /readyz shows v1 as soon as the slot swaps; the agent logs where v1 came from just after
        wait_for(lambda: "applied v1 from the local cache" in log.read_text(), 20,
                 "the site's log to say v1 came from its local cache")
    finally:
        stop(site)


def test_offline_site_keeps_serving_and_ships_every_buffered_sample_once(bundles, split, tmp_path: Path) -> None:
    interval = 2.0
    site, port, log, repo, store = sampling_site(bundles, tmp_path, interval, window=0.5)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    sent = 0

    def send(n: int) -> None:
        nonlocal sent
        for i in range(n):
            rows = [dict(zip(FEATURES, map(float, r))) for r in split.x_test[i % 50: i % 50 + 3]]
            status, _ = post_json(conn, "/v1/predict", json.dumps({"instances": rows}))
            assert status == 200
            sent += len(rows)

    try:
        wait_for(lambda: readyz(port).get("model_version") == 1, 20, "site to apply v1")
        send(20)
        # The network to the control plane goes away: remote and store both unreachable.
        (tmp_path / "remote").rename(tmp_path / "remote-away")
        wait_for(lambda: metric(port, "edgewave_agent_offline") == 1, 15, "the agent to notice it is offline")
        send(100)
        # windows close every 0.5 s and cannot be shipped: the agent keeps them
        wait_for(lambda: metric(port, "edgewave_agent_buffered_windows") >= 1, 30, "windows buffered while offline")
        assert readyz(port)["model_version"] == 1

        # Back online, with a new desired version committed meanwhile.
        (tmp_path / "remote-away").rename(tmp_path / "remote")
        repo.set(SITE, 2, bundles.v2, bundles.sha(bundles.v2))
        # the agent's wait after failures is capped at its interval (tests/unit/test_edge_logic.py), so it
        # converges within a few intervals of the remote coming back, not after a long backoff
        wait_for(lambda: readyz(port).get("model_version") == 2, 10 * interval, "convergence after reconnect")
        wait_for(lambda: metric(port, "edgewave_agent_offline") == 0, 10 * interval, "the agent to be online")
    finally:
        conn.close()
        # a clean stop flushes the last window and ships it; on a busy machine that takes a while, and the
        # site's own shutdown allows its agent 30 s (Agent.join_timeout): a KILL before that would lose it
        stop(site, timeout=60)

    ids = shipped_ids(store)
    assert ids
    assert len(ids) == sent, f"{sent} rows sampled, {len(ids)} uploaded; the site said:\n{log.read_text()[-3000:]}"
    assert len(set(ids)) == len(ids), "a sample was uploaded twice"
    site_dir = tmp_path / "site-home" / "sites" / SITE / "samples"
    assert not list(site_dir.glob("*.parquet")), "a shipped window was left behind"


def test_sigterm_writes_and_ships_the_open_window_before_the_site_exits(bundles, split, tmp_path: Path) -> None:
    """`docker stop` and a deleted pod send SIGTERM: the rows of the window still open are written and
    shipped, and the site exits 0. (uvicorn raises the signal again after its own shutdown; under
    Python's default handler that killed the site first and these rows were lost.)"""
    site, port, log, _repo, store = sampling_site(bundles, tmp_path, 1.0, window=3600)  # no window closes by itself
    try:
        wait_for(lambda: readyz(port).get("model_version") == 1, 30, "site to apply v1")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        rows = [dict(zip(FEATURES, map(float, r))) for r in split.x_test[:5]]
        for _ in range(10):
            assert post_json(conn, "/v1/predict", json.dumps({"instances": rows}))[0] == 200
        conn.close()
    finally:
        stop(site, timeout=60)
    assert site.returncode == 0, f"the site was killed by its signal ({site.returncode}):\n{log.read_text()[-2000:]}"
    ids = shipped_ids(store)
    assert len(ids) == 50, f"{len(ids)} of 50 rows shipped at stop:\n{log.read_text()[-2000:]}"
    assert "stopped" in log.read_text().splitlines()[-1]
