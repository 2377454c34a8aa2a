"""The desired-state repository with real Git: the controller's clone pushes to a remote, which
agents (and other writers) see; races are re-applied, rewritten history is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from edgewave.serving.desired import DesiredState, parse_desired, site_file
from edgewave.serving.gitmirror import GitMirror
from edgewave.tasks.platform.fleetfile import load_fleet_file
from edgewave.tasks.rollout.controller import Controller, Io
from edgewave.tasks.rollout.gitops import HistoryRewritten
from edgewave.tasks.rollout.telemetry import Reading
from tests.helpers import desired_repo, remote_subjects, write_fleet_file

SHA = "c" * 64


def state(site: str, version: int, rollout: str = "ro-1") -> DesiredState:
    return DesiredState(site=site, model="m", version=version, bundle_url=f"file:///b/v{version}", sha256=SHA,
                        rollout_id=rollout, reason="wave 1/2")


def other_writer(remote: Path, folder: Path) -> callable:
    """Another clone of the remote (a person's hotfix): returns a function that commits and pushes a file."""
    subprocess.run(["git", "clone", "--quiet", str(remote), str(folder)], check=True, capture_output=True)

    def push(name: str, text: str, force_from: str | None = None) -> None:
        def run(*args: str) -> None:
            subprocess.run(["git", "-c", "user.name=person", "-c", "user.email=p@example.invalid", *args],
                           cwd=folder, check=True, capture_output=True)
        run("pull", "--quiet", "--ff-only", "origin", "main")
        if force_from:
            run("reset", "--quiet", "--hard", force_from)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
        run("add", name)
        run("commit", "--quiet", "-m", f"person: {name}")
        run("push", "--quiet", *(["--force"] if force_from else []), "origin", "HEAD:main")

    return push


def test_each_commit_is_pushed_to_the_remote_and_none_when_nothing_changed(tmp_path: Path) -> None:
    repo = desired_repo(tmp_path)
    remote = tmp_path / "desired.git"
    assert remote_subjects(remote) == ["desired state: initial commit"], "the embedded default is a bare remote"
    first = repo.commit([state("s1", 2)], "ro-1: wave 1/2 (canary) m v2 -> s1", ("ro-1", {"waves": [1]}))
    second = repo.commit([state("s2", 2), state("s3", 2)], "ro-1: wave 2/2 (rest) m v2 -> s2, s3")
    assert first and second and first != second
    assert repo.commit([state("s2", 2), state("s3", 2)], "ro-1: wave 2/2 again") is None, "a resumed wave re-committed"
    assert remote_subjects(remote)[:2] == ["ro-1: wave 2/2 (rest) m v2 -> s2, s3", "ro-1: wave 1/2 (canary) m v2 -> s1"]
    assert repo.read("s3").version == 2 and repo.read("s9") is None
    assert repo.record("ro-1") == {"waves": [1]}


def test_an_agent_mirror_sees_what_the_controller_pushed(tmp_path: Path) -> None:
    repo = desired_repo(tmp_path)
    mirror = GitMirror(repo.remote, tmp_path / "site" / "checkout")
    repo.commit([state("s1", 2)], "ro-1: wave 1/1")
    assert mirror.sync() == repo.head()
    assert parse_desired(mirror.read(site_file("s1")), "s1.yaml", "s1").version == 2
    repo.commit([state("s1", 1, rollout="ro-1-rollback")], "ro-1: rollback")
    mirror.sync()
    assert parse_desired(mirror.read(site_file("s1")), "s1.yaml", "s1").rollout_id == "ro-1-rollback"


def test_an_agent_restarted_after_dying_mid_fetch_syncs_again(tmp_path: Path) -> None:
    """A fetch leaves `shallow.lock` and the ref's lock while it writes; a site that died then (or a home
    copied at that moment) found them on its next start and could never fetch again."""
    repo = desired_repo(tmp_path)
    folder = tmp_path / "site" / "checkout"
    repo.commit([state("s1", 2)], "ro-1: wave 1/1")
    GitMirror(repo.remote, folder).sync()
    left = [folder / "shallow.lock", folder / "refs" / "heads" / "main.lock"]
    for lock in left:
        lock.write_bytes(b"")
    repo.commit([state("s1", 3)], "ro-2: wave 1/1")
    restarted = GitMirror(repo.remote, folder)
    assert restarted.sync() == repo.head()
    assert parse_desired(restarted.read(site_file("s1")), "s1.yaml", "s1").version == 3
    assert not any(lock.exists() for lock in left)


def test_a_push_race_is_reapplied_on_the_new_head_and_keeps_the_other_change(tmp_path: Path) -> None:
    repo = desired_repo(tmp_path)
    person = other_writer(tmp_path / "desired.git", tmp_path / "person")
    notes: list[str] = []
    repo.notify, repo.sleep = notes.append, lambda seconds: None
    real_git = repo._git
    raced = []

    def git_with_a_race(*args: str, **kwargs):
        if args[0] == "push" and not raced:  # someone pushes between our sync and our push
            raced.append(True)
            person("sites/hotfix.yaml", "site: hotfix\n")
        return real_git(*args, **kwargs)

    repo._git = git_with_a_race
    commit = repo.commit([state("s1", 2)], "ro-1: wave 1/1 (all) m v2 -> s1")
    assert commit and raced
    assert any("refused" in n and "re-applying" in n for n in notes), notes
    remote = tmp_path / "desired.git"
    assert remote_subjects(remote)[:2] == ["ro-1: wave 1/1 (all) m v2 -> s1", "person: sites/hotfix.yaml"]
    merges = subprocess.run(["git", "--git-dir", str(remote), "rev-list", "--merges", "main"], capture_output=True,
                            text=True, check=True).stdout
    assert merges == "", "linear history"
    show = lambda name: subprocess.run(["git", "--git-dir", str(remote), "show", f"main:{name}"], capture_output=True,
                                       text=True, check=True).stdout
    assert show("sites/hotfix.yaml") == "site: hotfix\n", "the other writer's change is intact"
    assert "version: 2" in show("sites/s1.yaml")


def test_a_force_pushed_remote_is_refused_and_nothing_is_pushed(tmp_path: Path) -> None:
    repo = desired_repo(tmp_path)
    repo.commit([state("s1", 2)], "ro-1: wave 1/2")
    person = other_writer(tmp_path / "desired.git", tmp_path / "person")
    root = subprocess.run(["git", "--git-dir", str(tmp_path / "desired.git"), "rev-list", "--max-parents=0", "main"],
                          capture_output=True, text=True, check=True).stdout.strip()
    person("sites/s1.yaml", "site: s1\n", force_from=root)  # history rewritten under the controller
    rewritten = remote_subjects(tmp_path / "desired.git")
    with pytest.raises(HistoryRewritten, match="rewritten.*does not contain"):
        repo.commit([state("s2", 2)], "ro-1: wave 2/2")
    assert remote_subjects(tmp_path / "desired.git") == rewritten, "nothing was pushed"


def test_a_rollout_whose_remote_was_rewritten_holds_and_says_why(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    write_fleet_file(fleet, {"s0": 20001, "s1": 20002})
    repo = desired_repo(tmp_path)
    log: list[str] = []
    io = Io(repo=repo, read=lambda sites: {s.id: Reading(version=1) for s in sites}, sleep=lambda s: None, log=log.append)
    controller = Controller(load_fleet_file(fleet), "m", 2, "file:///b/v2", SHA, 1, io)
    record = controller.start()
    person = other_writer(tmp_path / "desired.git", tmp_path / "person")
    root = subprocess.run(["git", "--git-dir", str(tmp_path / "desired.git"), "rev-list", "--max-parents=0", "main"],
                          capture_output=True, text=True, check=True).stdout.strip()
    repo.commit([state("s0", 1)], "before the rollout")
    person("README.md", "rewritten\n", force_from=root)
    record = controller.commit_wave(record, 0)
    assert record.status == "held" and "rewritten" in record.reason
    assert record.waves[0].status == "held"
    assert any("held" in line for line in log)
    assert not any("wave 1/2" in s for s in remote_subjects(tmp_path / "desired.git"))
