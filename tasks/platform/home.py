"""A relocatable home: EDGEWAVE_HOME copied or moved elsewhere (a backup restored, a new disk) works on
its own, and never writes into the directory it came from.

Three things inside a home name its absolute path: MLflow's SQLite database (each experiment's artifact
location, each run's artifact URI, each version's source, the `bundle_url` tags), the Git configuration
of the controller's clone (its remote is the home's desired-state repository), and the records of the
processes the home started (a copy's records name the original's sites and servers: `fleet down` from the
copy would stop them). The home writes its path to `home-path`; a command that finds another path there
rewrites the first two from the old path to the new one, forgets the third, and says so.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

MARKER = "home-path"
PROCESS_RECORDS = ("fleet", "servers")  # <home>/<folder>/<name>.json: a pid or container this home started
GIT_DEPTH = 4  # how deep under the home Git repositories (clones and bare mirrors) are looked for


@dataclass(frozen=True)
class Relocated:
    old: str
    new: str
    database_values: int
    git_configs: int
    forgotten: list[str]

    def __str__(self) -> str:
        return (f"this home was at {self.old}, now {self.new}: {self.database_values} path(s) in mlflow.db and "
                f"{self.git_configs} Git remote configuration(s) rewritten to it; process records of the old home "
                f"forgotten: {', '.join(self.forgotten) or 'none'}")


def moved(old: str, new: str, text: str) -> str:
    """`text` with every path at or under `old` moved under `new` (`/a/home-2` is not under `/a/home`)."""
    return re.sub(re.escape(old) + r"(?=[/\"'\s]|$)", new.replace("\\", "\\\\"), text, flags=re.MULTILINE)


def relocate(home: Path) -> Relocated | None:
    """Rewrite the home's own paths if it was last used elsewhere (None when it was not, or is new)."""
    home = home.resolve()
    marker = home / MARKER
    old = marker.read_text().strip() if marker.exists() else None
    if old == str(home):
        return None
    relocated = None
    if old:
        relocated = Relocated(old, str(home), _rewrite_database(home / "mlflow.db", old, str(home)),
                              _rewrite_git_configs(home, old, str(home)), _forget_processes(home))
    home.mkdir(parents=True, exist_ok=True)
    marker.write_text(f"{home}\n")
    return relocated


def _rewrite_database(database: Path, old: str, new: str) -> int:
    """Every text value under `old` in every table, in one transaction; the number of values changed."""
    if not database.exists():
        return 0
    changed = 0
    with sqlite3.connect(database, timeout=60) as db:
        db.create_function("edgewave_moved", 1, lambda value: moved(old, new, value) if isinstance(value, str) else value,
                           deterministic=True)
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in db.execute(f'PRAGMA table_info("{table}")')
                       if any(t in (row[2] or "").upper() for t in ("CHAR", "TEXT", "CLOB"))]
            for column in columns:
                cursor = db.execute(f'UPDATE "{table}" SET "{column}" = edgewave_moved("{column}") '
                                    f'WHERE "{column}" LIKE ? AND edgewave_moved("{column}") != "{column}"',
                                    (f"%{old}%",))
                changed += cursor.rowcount
    return changed


def _rewrite_git_configs(home: Path, old: str, new: str) -> int:
    """The remote URLs (and any other path) in the Git configurations of repositories under the home."""
    changed = 0
    for config in _git_configs(home, GIT_DEPTH):
        text = config.read_text()
        rewritten = moved(old, new, text)
        if rewritten != text:
            config.write_text(rewritten)
            changed += 1
    return changed


def _git_configs(folder: Path, depth: int) -> list[Path]:
    found = []
    for child in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not child.is_dir() or child.is_symlink():
            continue
        if child.name == ".git" or (child / "HEAD").is_file() and (child / "objects").is_dir():
            if (child / "config").is_file():
                found.append(child / "config")
            continue
        if depth > 0:
            found += _git_configs(child, depth - 1)
    return found


def _forget_processes(home: Path) -> list[str]:
    """Remove the records of processes the home started where it was: they are the old home's."""
    forgotten = []
    for folder in PROCESS_RECORDS:
        for record in sorted((home / folder).glob("*.json")):
            record.unlink()
            forgotten.append(f"{folder}/{record.stem}")
    return forgotten
