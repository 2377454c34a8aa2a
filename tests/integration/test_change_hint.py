"""The desired state's change hints in a real registry (Debian's docker-registry on 127.0.0.1): the
controller moves a site's hint with every commit that changes that site's file, and only then; an
agent asks its own hint and fetches Git only when it moved, at least every full-sync period, and on
every cycle while the hint cannot be read."""

from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edgewave.serving.access import RemoteAccess
from edgewave.serving.agent import Agent
from edgewave.serving.desired import DesiredState
from edgewave.serving.metrics import SiteMetrics
from edgewave.serving.model import BundleCache, ModelSlot
from edgewave.serving.oci import HintWatcher, OciError
from edgewave.tasks.rollout.gitops import HINTED, DesiredStateRepo
from tests.helpers import free_port, wait_for
from tests.integration.test_oci_bundles import STATE, registry  # noqa: F401  (the module's registry fixture)

SHA = "a" * 64


def state(site: str, version: int) -> DesiredState:
    return DesiredState(site=site, model="m", version=version, bundle_url=f"file:///bundles/v{version}", sha256=SHA,
                        rollout_id=f"ro-{version}")


def repo_with_hint(folder: Path, hint: str, notes: list[str] | None = None) -> DesiredStateRepo:
    return DesiredStateRepo(str(folder / "desired.git"), folder / "clone",
                            notify=notes.append if notes is not None else lambda line: None, hint=hint).ensure()


def test_a_sites_hint_moves_with_its_file_and_with_nothing_else(registry, tmp_path: Path) -> None:  # noqa: F811
    hint = f"oci://{registry}/edgewave/hints-{uuid.uuid4().hex[:12]}:head"  # the registry outlives a run
    s1, s2 = (HintWatcher(hint, site, RemoteAccess()) for site in ("s1", "s2"))
    repo = repo_with_hint(tmp_path, hint)
    assert s1.digest() is None, "nothing published before a site has a file"
    repo.commit([state("s1", 1), state("s2", 1)], "wave 1")
    first = {"s1": s1.digest(), "s2": s2.digest()}
    assert all(d and d.startswith("sha256:") for d in first.values()) and first["s1"] != first["s2"], first
    repo.commit([], "lease renewed", extra={"leases/m.json": '{"owner": "x"}'})
    assert (s1.digest(), s2.digest()) == (first["s1"], first["s2"]), "a commit that changes no site's file moves none"
    repo.commit([state("s2", 2)], "wave 2: s2 only")
    assert s1.digest() == first["s1"], "a wave moves only its own sites' hints"
    assert s2.digest() not in (first["s2"], None)

    # a change pushed by hand (no hint moved) is caught up by the controller's next commit, whatever it changes
    DesiredStateRepo(str(tmp_path / "desired.git"), tmp_path / "by-hand").ensure().commit([state("s1", 3)], "by hand")
    assert s1.digest() == first["s1"]
    repo.commit([], "lease renewed again", extra={"leases/m.json": '{"owner": "y"}'})
    assert s1.digest() not in (first["s1"], None)

    # another controller's clone (nothing remembered) moves every hint once: to the same digests
    moved = (s1.digest(), s2.digest())
    DesiredStateRepo(str(tmp_path / "desired.git"), tmp_path / "clone-2", hint=hint).ensure()._move_hint()
    assert (s1.digest(), s2.digest()) == moved

    # the tree the hints last named is gone (a rewritten history): every hint is moved again, the commit stands
    (tmp_path / "clone" / ".git" / HINTED).write_text("0" * 40 + "\n")
    assert repo.commit([state("s1", 4)], "after a rewrite") is not None
    assert s1.digest() not in (moved[0], None) and s2.digest() == moved[1]


def test_a_wave_of_many_sites_uploads_the_hints_shared_config_once(registry, tmp_path: Path) -> None:  # noqa: F811
    """Eight threads that each found the config missing uploaded it at once, and the registry refused some of
    those uploads (DIGEST_INVALID at 500 sites in bench/fleet_sync.py): the first hint goes alone."""
    repository = f"edgewave/hints-{uuid.uuid4().hex[:12]}"  # a new repository: it lacks the config
    notes: list[str] = []
    repo = repo_with_hint(tmp_path, f"oci://{registry}/{repository}:head", notes)
    sites = [f"s{i:02d}" for i in range(24)]
    repo.commit([state(site, 1) for site in sites], "wave 1: 24 sites at once")
    assert not [note for note in notes if "change hint" in note], notes
    assert all(HintWatcher(f"oci://{registry}/{repository}:head", site, RemoteAccess()).digest() for site in sites)

    def uploads() -> int:
        log = (STATE / "registry.log").read_text(errors="replace")
        return sum(f"POST /v2/{repository}/blobs/uploads/" in line for line in log.splitlines())

    wait_for(lambda: uploads() >= 1, 30, "the config's upload in the registry's access log")
    assert uploads() == 1


def test_a_registry_that_is_down_leaves_the_commit_standing_and_says_so(tmp_path: Path) -> None:
    notes: list[str] = []
    repo = repo_with_hint(tmp_path, f"oci://127.0.0.1:{free_port()}/edgewave/desired-state:head", notes)
    head = repo.commit([state("s1", 1)], "wave 1")
    assert head is not None and repo.read("s1") == state("s1", 1)
    moved = [note for note in notes if "change hint" in note]
    assert len(moved) == 1 and "the change hint was not moved for 1 of 1 site(s)" in moved[0] \
        and "next full sync" in moved[0], notes


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def agent_for(folder: Path, remote: str, hint: HintWatcher | None, clock: Clock) -> Agent:
    site = folder / "site"
    site.mkdir()
    return Agent("s1", site, remote, (folder / "store").as_uri(), ModelSlot(), BundleCache(site / "bundles"), {},
                 SiteMetrics("s1"), None, 10.0, clock=clock, hint=hint, full_sync_seconds=300)


def syncs(agent: Agent) -> dict[str, float]:
    return {kind: agent.metrics.agent_syncs.labels(kind)._value.get() for kind in ("fetched", "unchanged")}


def test_an_agent_fetches_git_only_when_the_hint_moved_or_its_full_sync_is_due(registry, tmp_path: Path) -> None:  # noqa: F811
    hint = f"oci://{registry}/edgewave/hints-{uuid.uuid4().hex[:12]}:head"
    repo = repo_with_hint(tmp_path, hint)
    repo.commit([state("s1", 1)], "wave 1")
    clock = Clock()
    agent = agent_for(tmp_path, str(tmp_path / "desired.git"), HintWatcher(hint, "s1", RemoteAccess()), clock)
    assert agent.sync_desired_state() == state("s1", 1)
    for _ in range(3):
        clock.now += 10
        assert agent.sync_desired_state() == state("s1", 1)
    assert syncs(agent) == {"fetched": 1, "unchanged": 3}

    repo.commit([state("s1", 2)], "wave 2")
    clock.now += 10
    assert agent.sync_desired_state() == state("s1", 2), "the hint moved: fetched at once"
    assert syncs(agent) == {"fetched": 2, "unchanged": 3}

    # a change the hint never heard of (a person's push without the controller): found at the full sync
    other = DesiredStateRepo(str(tmp_path / "desired.git"), tmp_path / "by-hand").ensure()
    other.commit([state("s1", 3)], "hotfix by hand")
    clock.now += 290
    assert agent.sync_desired_state() == state("s1", 2)
    clock.now += 11
    assert agent.sync_desired_state() == state("s1", 3), "300 s after the last fetch: fetched whatever the hint says"
    assert syncs(agent) == {"fetched": 3, "unchanged": 4}


def test_an_unreadable_hint_means_a_fetch_every_cycle_said_once(tmp_path: Path, caplog) -> None:
    repo = DesiredStateRepo(str(tmp_path / "desired.git"), tmp_path / "clone").ensure()
    repo.commit([state("s1", 1)], "wave 1")
    dead = HintWatcher(f"oci://127.0.0.1:{free_port()}/edgewave/desired-state:head", "s1", RemoteAccess())
    clock = Clock()
    agent = agent_for(tmp_path, str(tmp_path / "desired.git"), dead, clock)
    for _ in range(3):
        clock.now += 10
        assert agent.sync_desired_state() == state("s1", 1)
    assert syncs(agent) == {"fetched": 3, "unchanged": 0}
    assert agent.metrics.agent_errors.labels("hint_unreachable")._value.get() == 3
    said = [r.getMessage() for r in caplog.records if "change hint" in r.getMessage()]
    assert len(said) == 1 and "fetching the desired state every cycle until it answers" in said[0], said



def answering(statuses: list[int]) -> tuple[ThreadingHTTPServer, list[int]]:
    """An HTTP server on 127.0.0.1 answering HEADs with these statuses in turn (then the last), a digest with
    each 200; it records what it answered."""
    answered: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's name)
            status = statuses[min(len(answered), len(statuses) - 1)]
            answered.append(status)
            self.send_response(status)
            if status == 200:
                self.send_header("Docker-Content-Digest", "sha256:" + "b" * 64)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, answered


@pytest.mark.parametrize(("statuses", "digest"), [([500, 200], "sha256:" + "b" * 64), ([503, 503, 200], None)])
def test_a_registry_error_on_the_hint_is_asked_once_more_then_said(statuses: list[int], digest: str | None) -> None:
    """docker-registry answers 500 to a HEAD that reads a tag while it is rewritten: asked again, the
    hint is read; a registry that fails twice is an error (the agent then fetches Git)."""
    server, answered = answering(statuses)
    try:
        watcher = HintWatcher(f"oci://127.0.0.1:{server.server_address[1]}/edgewave/desired-state:head", "s1",
                              RemoteAccess())
        if digest is not None:
            assert watcher.digest() == digest
        else:
            with pytest.raises(OciError, match="answered 503"):
                watcher.digest()
        assert answered == statuses[:2], answered
    finally:
        server.shutdown()
        server.server_close()
