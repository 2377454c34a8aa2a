"""The desired-state Git repository, as the rollout controller writes it: through a real remote.

One YAML file per site (`sites/<site>.yaml`, schema in serving/desired.py) and one rollout
record per rollout (`rollouts/<id>.json`). The controller works in its own clone (under
EDGEWAVE_HOME) of EDGEWAVE_DESIRED_STATE_REMOTE, any URL git accepts; every wave and every
rollback is one commit, and it counts only once the remote accepted the push.

Someone else pushed first (a person's hotfix, another tool): fetch, re-apply this commit's
files on the new head, push again, a bounded number of times with backoff; never a force
push. A remote whose history was rewritten under the controller (its head no longer descends
from the last head the controller saw) raises `HistoryRewritten`: the rollout holds and says
so rather than guess. Writing the same content again makes no commit, so a resumed rollout
never commits a finished wave twice.

With EDGEWAVE_DESIRED_STATE_HINT set, every commit also moves the change hint of each site whose
file changed since the hints were last moved (one OCI tag per site whose content is its file's
blob id, serving/oci.py), after its push: agents ask their hint's digest, one HTTP HEAD, and fetch
Git only when it moved. Hints move after the push, so an agent that sees its hint move always
finds the commit in Git; a wave moves only its own sites' hints.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import yaml

from edgewave.serving.access import RemoteAccess
from edgewave.serving.desired import BRANCH, DesiredState, read_desired, site_file
from edgewave.serving.errors import Actionable
from edgewave.serving.oci import OciError, client, hint_reference, push_hint
from edgewave.serving.redact import redact
from edgewave.tasks.rollout import k8s

log = logging.getLogger("edgewave.gitops")
AUTHOR = ["-c", "user.name=edgewave", "-c", "user.email=edgewave@localhost"]
PUSH_ATTEMPTS = 5
KNOWN_HEAD = "edgewave-known-head"  # in the clone's .git: the last remote head this controller saw
HINTED = "edgewave-hinted-sites"  # in the clone's .git: the sites/ tree whose files every hint names
HINT_THREADS = 8  # hints are moved this many at a time (a wave of thousands is thousands of small pushes)
HELD_BY_REWRITE = "edgewave-held-by-rewrite"  # in the clone's .git: attempts held because the history was rewritten
README = ("# edgewave desired state\n\n`sites/<site>.yaml`: what each site should run (written by the rollout "
          "flow, applied by agents, Argo CD or Flux).\n`rollouts/<id>.json`: each rollout's waves and decisions.\n")


def git(*args: str, cwd: Path | None = None, timeout: float = 30, access: RemoteAccess | None = None) -> str:
    """Run git; a failure raises GitError (a ConnectionError) with git's message, every URL in it redacted."""
    access = access or RemoteAccess()
    try:
        result = subprocess.run(["git", *access.git_config(), *args], cwd=cwd, capture_output=True, text=True,
                                timeout=timeout, env={**os.environ, **access.git_env()})
    except subprocess.TimeoutExpired:
        raise ConnectionError(redact(f"git {' '.join(args)} did not finish in {timeout:g}s")) from None
    if result.returncode != 0:
        raise GitError(redact(f"git {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}"))
    return result.stdout


class GitError(ConnectionError, Actionable):
    """A git command failed; the message (redacted) is git's own."""


class HistoryRewritten(RuntimeError, Actionable):
    """The remote's history no longer contains what the controller pushed or saw (a force push).
    Nothing is pushed on a guess: a person looks, then accepts the new history (`edgewave reconcile`)."""


class PushRejected(RuntimeError):
    """The remote kept refusing the push after every re-apply."""


def is_local(remote: str) -> bool:
    """A path or file:// URL (the embedded default), as opposed to ssh://, https://, user@host:path."""
    scheme = urlparse(remote).scheme
    return scheme in ("", "file") and not (":" in remote.split("/", 1)[0] and "@" in remote.split(":", 1)[0])


def _one_at_a_time(method):
    """Run `method` holding the clone's lock (see DesiredStateRepo._exclusive)."""
    @functools.wraps(method)
    def locked(self, *args, **kwargs):
        with self._exclusive():
            return method(self, *args, **kwargs)
    return locked


class DesiredStateRepo:
    """The controller's clone of the desired-state remote.

    Two controllers on one machine with one EDGEWAVE_HOME (two `edgewave rollout` started
    together) share this clone: its git operations take an exclusive file lock beside it, so
    one's checkout never runs under the other's commit. Controllers on other machines have
    clones of their own and meet only at the remote (the lease, rejected pushes).
    """

    def __init__(self, remote: str, path: Path, access: RemoteAccess | None = None,
                 notify: Callable[[str], None] = lambda line: None, sleep: Callable[[float], None] = time.sleep,
                 hint: str | None = None) -> None:
        self.remote = remote
        self.hint = hint
        self.path = Path(path)
        self.access = access or RemoteAccess()
        self.notify = notify
        self.sleep = sleep
        self._held = False

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        if self._held:  # commit() syncs inside its own lock
            yield
            return
        lock = self.path.parent / f".{self.path.name}.lock"
        lock.parent.mkdir(parents=True, exist_ok=True)
        with open(lock, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._held = True
            try:
                yield
            finally:
                self._held = False
                fcntl.flock(handle, fcntl.LOCK_UN)

    @classmethod
    def of(cls, settings, notify: Callable[[str], None] = lambda line: None) -> DesiredStateRepo:
        """The repository a control plane with these settings works with (its clone under home)."""
        return cls(settings.desired_state_url, settings.home / "controller" / "desired-state",
                   settings.remote_access(), notify, hint=settings.desired_state_hint)

    def _git(self, *args: str, timeout: float = 60) -> str:
        return git(*args, cwd=self.path, timeout=timeout, access=self.access)

    # -- set-up ----------------------------------------------------------------------------
    @_one_at_a_time
    def ensure(self) -> DesiredStateRepo:
        """Clone the remote (creating the embedded bare repository and a first commit when needed)."""
        if is_local(self.remote):
            bare = Path(self.remote.removeprefix("file://"))
            if not bare.exists():
                bare.mkdir(parents=True)
                git("init", "--quiet", "--bare", "--initial-branch", BRANCH, cwd=bare)
        if (self.path / ".git").exists() and self._origin() != self.remote:
            shutil.rmtree(self.path)  # the remote was changed in the settings: start from the new one
        if not (self.path / ".git").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            git("clone", "--quiet", self.remote, str(self.path), timeout=120, access=self.access)
        lock = self.path / ".git" / "index.lock"
        if lock.exists():  # left by a controller killed mid-commit: no other one holds the clone's lock now
            lock.unlink()
            self.notify(f"desired state: removed a stale {lock}")
        if not self._git("ls-remote", "--heads", "origin", BRANCH).strip():
            self._first_commit()
        self.sync()
        return self

    @_one_at_a_time
    def follow(self) -> str:
        """For a reader (the exporter): clone if needed, then take the remote's head as it is.

        Never writes to the remote and never holds a rewritten history against it; the
        controller, which commits, does that (`ensure`, `sync`)."""
        if not (self.path / ".git").exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            git("clone", "--quiet", self.remote, str(self.path), timeout=120, access=self.access)
        self._git("fetch", "--quiet", "origin", BRANCH)
        self._move_to_origin()
        return self.head()

    def _move_to_origin(self) -> None:
        self._git("checkout", "--quiet", "-B", BRANCH, f"origin/{BRANCH}")
        self._git("reset", "--quiet", "--hard", f"origin/{BRANCH}")

    def _origin(self) -> str:
        try:
            return git("remote", "get-url", "origin", cwd=self.path).strip()
        except GitError:
            return ""

    def _first_commit(self) -> None:
        self._git("checkout", "--quiet", "-B", BRANCH)
        (self.path / "README.md").write_text(README)
        self._git("add", "README.md")
        self._git(*AUTHOR, "commit", "--quiet", "-m", "desired state: initial commit")
        self._git("push", "--quiet", "origin", f"HEAD:refs/heads/{BRANCH}")
        self.notify(f"desired state: created {BRANCH} on {redact(self.remote)}")

    # -- staying in step with the remote -------------------------------------------------------
    def _known(self) -> str | None:
        path = self.path / ".git" / KNOWN_HEAD
        return path.read_text().strip() if path.exists() else None

    def _remember(self, commit: str) -> None:
        (self.path / ".git" / KNOWN_HEAD).write_text(commit + "\n")

    def _descends(self, ancestor: str, commit: str) -> bool:
        result = subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit], cwd=self.path,
                                capture_output=True, timeout=30)
        return result.returncode == 0

    @_one_at_a_time
    def sync(self) -> str:
        """Fetch the remote and move the clone to its head; returns it.

        Raises HistoryRewritten when the remote head does not descend from the last head this
        controller saw, and ConnectionError (redacted) when the remote cannot be reached.
        """
        self._git("fetch", "--quiet", "origin", BRANCH)
        head = self._git("rev-parse", f"origin/{BRANCH}").strip()
        known = self._known()
        if known and known != head and not self._descends(known, head):
            raise HistoryRewritten(
                f"the history of {redact(self.remote)} ({BRANCH}) was rewritten: its head {head[:12]} does not "
                f"contain {known[:12]}, the last commit this controller saw. Nothing was pushed. Check what "
                f"happened to the remote; to accept its new history, run `edgewave reconcile`.")
        self._move_to_origin()
        self._remember(head)
        return head

    @_one_at_a_time
    def accept_remote(self) -> tuple[str | None, str]:
        """Take the remote's history as it is now, rewritten or not (`edgewave reconcile`, after a
        person looked): the last head this controller saw, and the remote's head it now stands on."""
        known = self._known()
        self._git("fetch", "--quiet", "origin", BRANCH)
        self._move_to_origin()
        head = self.head()
        self._remember(head)
        return known, head

    def note_held_by_rewrite(self, rollout_id: str) -> None:
        """Remember an attempt that held because the history was rewritten (its lease could not be
        released on a history this controller did not accept); `edgewave reconcile` releases it."""
        path = self.path / ".git" / HELD_BY_REWRITE
        noted = self.held_by_rewrite()
        path.write_text("".join(f"{r}\n" for r in sorted({*noted, rollout_id})))

    def held_by_rewrite(self, forget: bool = False) -> list[str]:
        path = self.path / ".git" / HELD_BY_REWRITE
        noted = path.read_text().split() if path.exists() else []
        if forget:
            path.unlink(missing_ok=True)
        return noted

    # -- reading (the clone as of the last sync) ----------------------------------------------------
    def read(self, site: str) -> DesiredState | None:
        return read_desired(self.path / site_file(site), site)

    def head(self) -> str:
        return self._git("rev-parse", "HEAD").strip()

    def record(self, rollout_id: str) -> dict | None:
        path = self.path / "rollouts" / f"{rollout_id}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def last_record(self, model: str) -> dict | None:
        """The newest rollout or rollback record of `model` (as of the last sync)."""
        for subject in self.log():
            rollout_id = subject.split(":", 1)[0]
            if rollout_id.startswith(("ro-", "rb-")):
                record = self.record(rollout_id)
                if record and record.get("model") == model:
                    return record
        return None

    def read_file(self, name: str) -> str | None:
        path = self.path / name
        return path.read_text() if path.exists() else None

    def log(self, grep: str | None = None) -> list[str]:
        """Commit subjects, newest first (optionally only those mentioning `grep`)."""
        args = ["log", "--format=%s"] + ([f"--grep={grep}", "--fixed-strings"] if grep else [])
        return [line for line in self._git(*args).splitlines() if line]

    # -- writing -------------------------------------------------------------------------------------
    @staticmethod
    def files(states: list[DesiredState], record: tuple[str, dict] | None = None) -> dict[str, str]:
        """What a commit writes: the site files (+ a Kubernetes site's overlay and base) and the record."""
        files: dict[str, str] = {}
        for state in states:
            files[site_file(state.site)] = yaml.safe_dump(state.model_dump(mode="json", exclude_none=True),
                                                          sort_keys=False)
            if state.image:
                files.update(k8s.base_files())
                files[k8s.overlay_path(state.site)] = k8s.overlay(state)
        if record is not None:
            files.update([record_file(*record)])
        return files

    @_one_at_a_time
    def commit(self, states: list[DesiredState], message: str, record: tuple[str, dict] | None = None,
               extra: dict[str, str | None] | None = None,
               precondition: Callable[[DesiredStateRepo], None] | None = None) -> str | None:
        """Write, commit and push; the commit once the remote accepted it, None when nothing changed.

        `extra` writes (or, with None, deletes) more files in the same commit (a lease);
        `precondition` is checked on every fresh head before writing and may raise to stop (a
        lease someone else took meanwhile). A push refused because the remote moved on is
        retried on the new head (fetch, re-check, re-apply these files, commit, push) up to
        PUSH_ATTEMPTS times with backoff. A Kubernetes site's overlay goes into the same commit,
        so Argo CD / Flux see the wave at once.
        """
        files: dict[str, str | None] = {**self.files(states, record), **(extra or {})}
        if not files:
            return None
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            self.sync()
            if precondition is not None:
                precondition(self)
            written = {name: text for name, text in files.items() if text is not None}
            for name, text in written.items():
                target = self.path / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
            if written:
                self._git("add", "--", *written)
            deleted = [name for name, text in files.items() if text is None]
            if deleted:
                self._git("rm", "--quiet", "--ignore-unmatch", "-f", "--", *deleted)
            if not self._git("status", "--porcelain", "--", *files).strip():
                return None
            self._git(*AUTHOR, "commit", "--quiet", "-m", message)
            try:
                self._git("push", "--quiet", "origin", f"HEAD:refs/heads/{BRANCH}")
            except GitError as exc:
                if not _rejected(str(exc)):
                    raise
                wait = min(8.0, 0.5 * 2 ** (attempt - 1))
                self.notify(f"desired state: push {attempt}/{PUSH_ATTEMPTS} refused (someone pushed first); "
                         f"re-applying on the new head in {wait:g}s")
                self.sleep(wait)
                continue
            head = self.head()
            self._remember(head)
            self._move_hint()
            return head
        raise PushRejected(f"{redact(self.remote)} refused the push {PUSH_ATTEMPTS} times: {message[:120]}")

    def _move_hint(self) -> None:
        """Move the hint of every site whose file differs from the one its hint names: against the tree
        the hints were last all moved to (none: every site's, once), so a hand-made push or an earlier
        failure is caught up too. Not moved (the registry is down), the commit still stands: those sites
        see it at their next full sync (EDGEWAVE_DESIRED_STATE_FULL_SYNC_SECONDS); this says so and goes on."""
        if self.hint is None:
            return
        try:
            tree = self._git("rev-parse", "HEAD:sites").strip()
        except GitError:
            return  # no site has a file yet: nothing for an agent to fetch
        marker = self.path / ".git" / HINTED
        last = marker.read_text().strip() if marker.exists() else None
        if tree == last:
            return
        now = self._site_files(tree)
        try:
            before = self._site_files(last) if last else {}
        except GitError:  # that tree is gone (a rewritten history, a new clone's gc): move every hint once
            before = {}
        changed = {site: blob for site, blob in now.items() if before.get(site) != blob}
        changed.update({site: "absent" for site in before if site not in now})
        failed = self._push_hints(changed)
        if failed:
            message = (f"desired state: the change hint was not moved for {len(failed)} of {len(changed)} site(s) "
                       f"({failed[0]}); they see this commit at their next full sync")
            log.warning("%s", message)
            self.notify(message)
            return
        marker.write_text(tree + "\n")

    def _site_files(self, tree: str) -> dict[str, str]:
        """Site → blob id of its file in a `sites/` tree."""
        files = {}
        for line in self._git("ls-tree", tree).splitlines():
            meta, _, name = line.partition("\t")
            if meta.split()[1] == "blob" and name.endswith(".yaml"):
                files[name.removesuffix(".yaml")] = meta.split()[2]
        return files

    def _push_hints(self, changed: dict[str, str]) -> list[str]:
        """Push each site's hint, HINT_THREADS at a time (a client per thread); the errors, one per site that failed."""
        from concurrent.futures import ThreadPoolExecutor

        hint = self.hint
        if hint is None or not changed:
            return []
        registry = hint_reference(hint).registry
        local = threading.local()

        def push(item: tuple[str, str]) -> str | None:
            if not hasattr(local, "client"):
                local.client = client(registry, self.access, once=True)
            try:
                push_hint(hint, item[0], item[1], self.access, local.client)
            except OciError as exc:
                return str(exc)
            return None

        first, *rest = sorted(changed.items())
        # the first alone: it uploads the hints' shared config blob where the repository lacks it; eight threads
        # uploading one blob at once, the registry refused some with DIGEST_INVALID (measured: bench/fleet_sync.py)
        errors = [push(first)]
        with ThreadPoolExecutor(max(1, min(HINT_THREADS, len(rest))), thread_name_prefix="hint") as pool:
            errors += pool.map(push, rest)
        return [error for error in errors if error]


def record_file(rollout_id: str, content: dict) -> tuple[str, str]:
    """(path, text) of a rollout record in the repository."""
    return f"rollouts/{rollout_id}.json", json.dumps(content, indent=1, sort_keys=True, default=str) + "\n"


def _rejected(message: str) -> bool:
    """git's wording for "the remote has commits you do not have"."""
    return any(word in message for word in ("[rejected]", "non-fast-forward", "fetch first", "cannot lock ref",
                                            "failed to update ref"))
