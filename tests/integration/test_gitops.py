"""The desired-state repository with real Git, read back the way an agent reads it."""

from __future__ import annotations

from pathlib import Path

from edgewave.serving.desired import DesiredState, GitMirror, read_desired, site_file
from edgewave.tasks.rollout.gitops import DesiredStateRepo

SHA = "c" * 64


def state(site: str, version: int, rollout: str = "ro-1") -> DesiredState:
    return DesiredState(site=site, model="m", version=version, bundle_url=f"file:///b/v{version}", sha256=SHA,
                        rollout_id=rollout, reason="wave 1/2")


def test_one_commit_per_wave_and_none_when_nothing_changed(tmp_path: Path) -> None:
    repo = DesiredStateRepo(tmp_path / "desired").ensure()
    assert repo.ensure().log() == ["desired state: initial commit"]
    first = repo.commit([state("s1", 2)], "ro-1: wave 1/2 (canary) m v2 -> s1", ("ro-1", {"waves": [1]}))
    second = repo.commit([state("s2", 2), state("s3", 2)], "ro-1: wave 2/2 (rest) m v2 -> s2, s3")
    assert first and second and first != second
    assert repo.commit([state("s2", 2), state("s3", 2)], "ro-1: wave 2/2 again") is None, "a resumed wave re-committed"
    assert repo.log("ro-1") == ["ro-1: wave 2/2 (rest) m v2 -> s2, s3", "ro-1: wave 1/2 (canary) m v2 -> s1"]
    assert repo.read("s3").version == 2 and repo.read("s9") is None
    assert repo.record("ro-1") == {"waves": [1]}


def test_an_agent_mirror_sees_what_the_controller_committed(tmp_path: Path) -> None:
    repo = DesiredStateRepo(tmp_path / "desired").ensure()
    mirror = GitMirror(str(repo.path), tmp_path / "site" / "checkout")
    repo.commit([state("s1", 2)], "ro-1: wave 1/1")
    assert mirror.sync() == repo.head()
    assert read_desired(mirror.checkout / site_file("s1"), "s1").version == 2
    repo.commit([state("s1", 1, rollout="ro-1-rollback")], "ro-1: rollback")
    mirror.sync()
    assert read_desired(mirror.checkout / site_file("s1"), "s1").rollout_id == "ro-1-rollback"
