"""Git over SSH and the monitoring store over SFTP through a real OpenSSH server on 127.0.0.1:
the controller pushes, a site only fetches, each site writes only its own prefix, host keys are
checked, and nothing secret appears in an error."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edgewave.serving.access import RemoteAccess
from edgewave.serving.desired import DesiredState, parse_desired, site_file
from edgewave.serving.gitmirror import GitMirror
from edgewave.serving.transport import upload_confirmed
from edgewave.tasks.platform.monitoring import MonitoringStore, SiteLedger
from edgewave.tasks.rollout.gitops import DesiredStateRepo, GitError
from tests import sshd

SITES = ["site-a", "site-b"]


@pytest.fixture(scope="module")
def server():
    with sshd.running(SITES) as running:
        yield running


def access(server, identity: sshd.Identity) -> RemoteAccess:
    return RemoteAccess(ssh_key=identity.key, known_hosts=server.known_hosts)


def state(site: str) -> DesiredState:
    return DesiredState(site=site, model="m", version=2, bundle_url="oci://127.0.0.1:5000/b@sha256:" + "a" * 64,
                        sha256="c" * 64, rollout_id="ro-1")


def test_the_controller_pushes_over_ssh_and_a_site_may_only_fetch(server, tmp_path: Path) -> None:
    repo = DesiredStateRepo(server.git_url(), tmp_path / "clone", access(server, server.controller)).ensure()
    assert repo.commit([state("site-a")], "ro-1: wave 1/1 (all) m v2 -> site-a")
    site = access(server, server.sites["site-a"])
    mirror = GitMirror(server.git_url(), tmp_path / "site-a", site)
    assert mirror.sync() == repo.head()
    assert parse_desired(mirror.read(site_file("site-a")), "site-a.yaml", "site-a").version == 2, \
        "the agent fetched over SSH with dulwich and paramiko (no git binary)"
    with pytest.raises(GitError, match="not allowed for this key"):
        DesiredStateRepo(server.git_url(), tmp_path / "site-clone", site).ensure().commit(
            [state("site-b")], "a site tries to write desired state")


def test_an_unknown_host_key_is_refused(server, tmp_path: Path) -> None:
    other = tmp_path / "known_hosts"
    other.write_text(f"[127.0.0.1]:{server.port} ssh-ed25519 "
                     "AAAAC3NzaC1lZDI1NTE5AAAAIHRhdCBpcyBub3QgdGhlIHNlcnZlcidzIGtleSBhdCBhbGwh\n")
    wrong = RemoteAccess(ssh_key=server.controller.key, known_hosts=other)
    with pytest.raises(ConnectionError, match="fetch of .* failed: BadHostKeyException"):
        GitMirror(server.git_url(), tmp_path / "m", wrong).sync()
    with pytest.raises(GitError, match="Host key verification failed|REMOTE HOST IDENTIFICATION"):
        DesiredStateRepo(server.git_url(), tmp_path / "c", wrong).ensure()
    with pytest.raises(ConnectionError, match="SFTP connection failed"):
        MonitoringStore(server.store_url(server.controller),
                        RemoteAccess(ssh_key=server.controller.key, known_hosts=other)).new_windows("site-a", SiteLedger())


def test_each_site_writes_only_its_own_prefix_and_the_control_plane_reads_all(server, tmp_path: Path) -> None:
    window = tmp_path / f"site-a-{int(time.time() * 1000)}-000001-n3.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"sample_id": ["a-1", "a-2", "a-3"], "timestamp": [1.0, 2.0, 3.0],
                             "probability": [0.1, 0.2, 0.3], "model_version": [2, 2, 2]}), window)
    site_a = access(server, server.sites["site-a"])
    store_a = server.store_url(server.sites["site-a"])
    upload_confirmed(window, store_a, f"site-a/{window.name}", site_a)
    with pytest.raises(OSError):
        upload_confirmed(window, store_a, f"site-b/{window.name}", site_a)
    with pytest.raises(OSError):
        upload_confirmed(window, store_a, f"_drift/{window.name}", site_a)
    assert (server.store_root / "site-a" / window.name).stat().st_size == window.stat().st_size
    assert not list((server.store_root / "site-a").glob(".*")), "no partial upload left behind"

    control = MonitoringStore(server.store_url(server.controller), access(server, server.controller))
    windows = control.new_windows("site-a", SiteLedger())
    frame, unreadable = control.read_windows(windows)
    assert list(windows.files) == [window.name] and len(frame) == 3 and not unreadable
    control.write_json({"ok": True}, "_drift", "ledgers", "site-a.json")
    assert control.read_json("_drift", "ledgers", "site-a.json") == {"ok": True}


def window_file(folder: Path, site: str, n: int = 3) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"{site}-{int(time.time() * 1000)}-000001-n{n}.parquet"
    pq.write_table(pa.table({"sample_id": [f"{site}-{i}" for i in range(n)], "timestamp": [1.0] * n,
                             "probability": [0.1] * n, "model_version": [2] * n}), path)
    return path


def test_a_site_account_sees_only_its_own_prefix_and_what_it_plants_there_is_never_followed(server,
                                                                                         tmp_path: Path) -> None:
    """What site-a's stolen key gets on the store: its own prefix, nothing of site-b, of the control
    plane or of the host; a link it plants in its prefix is skipped (and named) by the drift reader."""
    from edgewave.serving.stores import open_store

    b_window = window_file(tmp_path, "site-b")
    upload_confirmed(b_window, server.store_url(server.sites["site-b"]), f"site-b/{b_window.name}",
                     access(server, server.sites["site-b"]))
    control = MonitoringStore(server.store_url(server.controller), access(server, server.controller))
    control.write_json({"site": "site-b"}, "_drift", "ledgers", "site-b.json")

    fs, root = open_store(server.store_url(server.sites["site-a"]), access(server, server.sites["site-a"]))
    assert root == "/"
    for forbidden in ("/", "/site-b", "/_drift", "/_drift/ledgers"):  # listing
        with pytest.raises(OSError):
            fs.ls(forbidden)
    for forbidden in (f"/site-b/{b_window.name}", "/_drift/ledgers/site-b.json",  # reading
                      "/etc/passwd", "/etc/ssh/sshd_config", f"{server.repo}/HEAD", f"{server.base}/sshd_config"):
        with pytest.raises(OSError):
            fs.cat_file(forbidden)
    a_window = window_file(tmp_path, "site-a")
    upload_confirmed(a_window, server.store_url(server.sites["site-a"]), f"site-a/{a_window.name}",
                     access(server, server.sites["site-a"]))
    assert fs.cat_file(f"/site-a/{a_window.name}") == a_window.read_bytes(), "its own prefix: read and write"

    # links named like windows, planted in its own prefix: to site-b's window, to the host's shadow file
    planted = {f"site-a-{int(time.time() * 1000) + 1}-000002-n3.parquet": f"/site-b/{b_window.name}",
               f"site-a-{int(time.time() * 1000) + 2}-000003-n3.parquet": "/etc/shadow"}
    for name, target in planted.items():
        fs.ftp.symlink(target, f"/site-a/{name}")
    windows = control.new_windows("site-a", SiteLedger())
    assert a_window.name in windows.files and not set(planted) & set(windows.files), windows
    assert windows.skipped == dict.fromkeys(planted, "a symbolic link, not followed")
    frame, _ = control.read_windows(windows)
    assert not [i for i in frame["sample_id"] if i.startswith("site-b-")], "none of site-b's rows through a link"


def test_a_site_fetches_the_tip_not_the_history(server, tmp_path: Path) -> None:
    """A new site's first fetch costs the Git host the tip's objects however many rollouts came before, and
    later fetches bring what changed: the agent reads only the tip."""
    from dulwich.repo import Repo

    repo = DesiredStateRepo(server.git_url(), tmp_path / "clone", access(server, server.controller)).ensure()
    for version in range(1, 13):
        repo.commit([DesiredState(site=site, model="m", version=version, bundle_url=f"oci://r/b:v{version}",
                                  sha256="c" * 64, rollout_id=f"ro-{version}") for site in SITES], f"v{version}")
    mirror = GitMirror(server.git_url(), tmp_path / "site-a", access(server, server.sites["site-a"]))
    assert mirror.sync() == repo.head()
    assert parse_desired(mirror.read(site_file("site-a")), "site-a.yaml", "site-a").version == 12

    def objects() -> int:
        with Repo(str(tmp_path / "site-a")) as bare:
            return sum(1 for _ in bare.object_store)

    assert objects() <= 6, "the tip's commit, its trees and the two site files; not twelve rollouts' worth"
    repo.commit([state("site-a")], "v13 for site-a")
    assert mirror.sync() == repo.head()
    assert parse_desired(mirror.read(site_file("site-a")), "site-a.yaml", "site-a").version == 2
    assert objects() <= 12
