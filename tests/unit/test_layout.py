"""The layout the README promises: one import name, every package installed, no path hacks."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = ("flows", "tasks", "serving")


def test_every_package_folder_is_installed_under_edgewave() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {str(init.parent.relative_to(ROOT)) for top in CODE for init in (ROOT / top).rglob("__init__.py")}
    expected = {"edgewave." + folder.replace("/", ".") for folder in folders}
    assert set(config["packages"]) == expected, "pyproject.toml [tool.setuptools] packages must list every package"
    assert config["package-dir"] == {f"edgewave.{top}": top for top in CODE}


def test_code_imports_only_edgewave_names_and_never_edits_sys_path() -> None:
    files = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    bare = re.compile(r"^\s*(from|import)\s+(tasks|flows|serving)(\.|\s|$)", re.M)
    offenders = [f for f in files if bare.search((ROOT / f).read_text())]
    assert offenders == [], f"import edgewave.tasks/flows/serving, not the bare names: {offenders}"
    path_edits = [f for f in files if "sys.path" in (ROOT / f).read_text() and f != "tests/unit/test_layout.py"]
    assert path_edits == [], f"sys.path edits: {path_edits}"


def test_the_edge_imports_nothing_of_the_control_plane_code() -> None:
    control = re.compile(r"^\s*(from|import)\s+edgewave\.(tasks|flows)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "serving").rglob("*.py") if control.search(p.read_text())]
    assert offenders == [], f"serving/ must stand alone: {offenders}"
