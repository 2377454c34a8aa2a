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
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pydantic import BaseModel

from edgewave.serving.errors import Actionable


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
    return datetime.now(timezone.utc)
