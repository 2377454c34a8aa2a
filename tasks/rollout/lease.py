"""One rollout per model at a time, across machines: a lease in the desired-state repository.

`leases/<model>.json` names the rollout attempt that holds the model, its owner (host and
pid) and until when. It is taken, renewed and released by commits, so two controllers on two
machines agree through the same Git remote they write waves to: the second one's push of its
lease is rejected, it re-reads, and sees the first one's. A lease whose owner died (same host,
no such process) or whose time ran out can be taken over; the taker resumes that attempt
when it is the same version, or supersedes it otherwise.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from pydantic import BaseModel

from edgewave.serving.errors import Actionable
from edgewave.tasks.rollout.gitops import DesiredStateRepo


class RolloutBusy(RuntimeError, Actionable):
    """Another rollout of the model holds the lease; the message names it."""


class Lease(BaseModel):
    rollout_id: str
    version: int
    kind: str = "rollout"
    owner_host: str
    owner_pid: int
    acquired_at: datetime
    expires_at: datetime
    phase: str = "running"  # running | promoting (waves done, @production to move)

    def owner(self) -> str:
        return f"{self.owner_host}:{self.owner_pid}"

    def stale(self, now: datetime) -> str | None:
        """Why this lease may be taken over (its owner died, or its time ran out), else None."""
        if now >= self.expires_at:
            return f"its lease ran out at {self.expires_at:%Y-%m-%d %H:%M:%S} UTC"
        if self.owner_host == socket.gethostname() and not _alive(self.owner_pid):
            return f"its owner {self.owner()} is no longer running"
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def path(model: str) -> str:
    return f"leases/{model}.json"


@dataclass(frozen=True)
class Owner:
    host: str
    pid: int

    @classmethod
    def me(cls) -> Owner:
        return cls(socket.gethostname(), os.getpid())


def new_lease(rollout_id: str, version: int, kind: str, now: datetime, seconds: float,
              owner: Owner | None = None) -> Lease:
    owner = owner or Owner.me()
    return Lease(rollout_id=rollout_id, version=version, kind=kind, owner_host=owner.host, owner_pid=owner.pid,
                 acquired_at=now, expires_at=now + timedelta(seconds=seconds))


def busy_message(model: str, lease: Lease) -> str:
    return (f"{lease.kind} {lease.rollout_id} of {model} v{lease.version} is running (owner {lease.owner()}, since "
            f"{lease.acquired_at:%H:%M:%S} UTC, lease until {lease.expires_at:%H:%M:%S} UTC); one rollout per model "
            "at a time: try again when it ends, or pass --wait")


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ModelLease:
    """The lease protocol for one model in one desired-state repository: read, take, renew, hand over
    and release by commits. Nothing is remembered between calls: the lease is read from the clone
    (which holds our own last commit), so any step of a rollout, in any process, renews or checks
    the same lease."""

    repo: DesiredStateRepo
    model: str
    seconds: float
    now: Callable[[], datetime] = now_utc

    @property
    def path(self) -> str:
        return path(self.model)

    def read(self) -> Lease | None:
        text = self.repo.read_file(self.path)
        return Lease.model_validate_json(text) if text else None

    def wait_for_others(self, rollout_id: str, wait_seconds: float, sleep: Callable[[float], None],
                        log: Callable[[str], None]) -> Lease | None:
        """Another attempt's lease whose owner is gone (to take over), or None when the model is free;
        a live one is waited for up to `wait_seconds`, then refused naming it."""
        waited = 0.0
        while True:
            lease = self.read()
            if lease is None or lease.rollout_id == rollout_id:
                return None
            if lease.stale(self.now()):
                return lease
            if waited >= wait_seconds:
                raise RolloutBusy(busy_message(self.model, lease))
            log(f"{rollout_id}: waiting for {lease.rollout_id} (owner {lease.owner()}) to finish")
            sleep(5.0)
            waited += 5.0
            self.repo.sync()

    def commit(self, lease: Lease | None, message: str, rollout_id: str, expected: Lease | None = None,
               record: tuple[str, dict] | None = None, extra: dict[str, str | None] | None = None) -> str | None:
        """Write (or with None remove) the lease, with a record and more files, in one commit; refused
        if the lease in the remote is neither `rollout_id`'s nor `expected` (someone took it meanwhile)."""
        def unchanged(_repo) -> None:
            current = self.read()
            if current is None or current.rollout_id == rollout_id:
                return
            if expected is not None and current.rollout_id == expected.rollout_id and current.owner() == expected.owner():
                return
            raise RolloutBusy(busy_message(self.model, current))

        files = {self.path: _text(lease), **(extra or {})}
        return self.repo.commit([], message[:500], record, extra=files, precondition=unchanged)

    def ensure_ours(self, rollout_id: str) -> None:
        """Raise unless `rollout_id` holds the lease (a precondition of every wave's commit)."""
        current = self.read()
        if current is None or current.rollout_id != rollout_id:
            raise RolloutBusy(f"{rollout_id} lost its lease" + (f": {busy_message(self.model, current)}" if current else ""))

    def renew(self, rollout_id: str) -> None:
        """Renew `rollout_id`'s lease once half its time is gone (called between steps and measurements)."""
        lease = self.read()
        if lease is None or lease.rollout_id != rollout_id:
            return
        now = self.now()
        if (lease.expires_at - now).total_seconds() > self.seconds / 2:
            return
        renewed = lease.model_copy(update={"expires_at": now + timedelta(seconds=self.seconds)})
        self.commit(renewed, f"{rollout_id}: lease renewed until {renewed.expires_at:%H:%M:%S} UTC", rollout_id)

    def hold(self, rollout_id: str, seconds: float, why: str) -> None:
        """Set `rollout_id`'s lease to run out `seconds` from now: before a manual gate's pause (so no
        other controller takes the model while a person decides) and after it (back to the usual)."""
        lease = self.read()
        if lease is None or lease.rollout_id != rollout_id:
            return
        held = lease.model_copy(update={"expires_at": self.now() + timedelta(seconds=seconds)})
        self.commit(held, f"{rollout_id}: lease until {held.expires_at:%Y-%m-%d %H:%M:%S} UTC ({why})", rollout_id)

    def files(self, rollout_id: str, then: Literal["keep", "promoting", "release"]) -> dict[str, str | None]:
        """What a wave's commit writes of the lease: nothing (kept), the lease marked `promoting` (the
        waves are done, @production is to move), or its removal."""
        lease = self.read()
        if lease is None or lease.rollout_id != rollout_id or then == "keep":
            return {}
        return {self.path: None if then == "release" else _text(lease.model_copy(update={"phase": "promoting"}))}

    def release(self, rollout_id: str, message: str) -> str | None:
        return self.commit(None, message, rollout_id)


def _text(lease: Lease | None) -> str | None:
    return lease.model_dump_json(indent=1) + "\n" if lease else None
