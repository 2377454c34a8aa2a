"""A copied home rewrites its own paths and forgets the processes of the home it came from."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from edgewave.tasks.platform.home import moved, relocate


def test_a_path_moves_only_at_a_path_boundary() -> None:
    assert moved("/a/home", "/b/h", "file:///a/home/mlartifacts/1") == "file:///b/h/mlartifacts/1"
    assert moved("/a/home", "/b/h", "/a/home") == "/b/h"
    assert moved("/a/home", "/b/h", "/a/home-2/x") == "/a/home-2/x", "another directory that starts alike"
    assert moved("/a/home", "/b/h", 'url = "/a/home"\nurl = /a/home/desired.git') == 'url = "/b/h"\nurl = /b/h/desired.git'


def test_a_copied_home_rewrites_its_database_and_git_remotes_and_forgets_the_originals_processes(tmp_path: Path) -> None:
    original = tmp_path / "home"
    assert relocate(original) is None, "a new home only notes where it is"
    with sqlite3.connect(original / "mlflow.db") as db:
        db.execute("CREATE TABLE experiments (id INTEGER, artifact_location VARCHAR(256), n INTEGER)")
        db.execute("INSERT INTO experiments VALUES (1, ?, 3)", (f"file://{original}/mlartifacts/1",))
        db.execute("INSERT INTO experiments VALUES (2, ?, 4)", (f"file://{original}-other/x",))
    subprocess.run(["git", "init", "-q", "--bare", str(original / "desired-state.git")], check=True)
    subprocess.run(["git", "clone", "-q", str(original / "desired-state.git"), str(original / "controller" / "ds")],
                   check=True, capture_output=True)
    (original / "fleet").mkdir()
    (original / "fleet" / "site-0.json").write_text('{"pid": 1}')
    assert relocate(original) is None, "nothing moved"

    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    relocated = relocate(copy)
    assert relocated is not None and (relocated.old, relocated.new) == (str(original), str(copy))
    assert (relocated.database_values, relocated.git_configs, relocated.forgotten) == (1, 1, ["fleet/site-0"])
    with sqlite3.connect(copy / "mlflow.db") as db:
        assert [r[0] for r in db.execute("SELECT artifact_location FROM experiments ORDER BY id")] == [
            f"file://{copy}/mlartifacts/1", f"file://{original}-other/x"]
    remote = subprocess.run(["git", "-C", str(copy / "controller" / "ds"), "remote", "get-url", "origin"],
                            capture_output=True, text=True, check=True).stdout.strip()
    assert remote == str(copy / "desired-state.git")
    assert (original / "fleet" / "site-0.json").exists() and not (copy / "fleet" / "site-0.json").exists()
    with sqlite3.connect(original / "mlflow.db") as db:
        assert db.execute("SELECT artifact_location FROM experiments WHERE id = 1").fetchone()[0].startswith(
            f"file://{original}/"), "the original is untouched"
    assert relocate(copy) is None, "once rewritten, the copy is at home"
