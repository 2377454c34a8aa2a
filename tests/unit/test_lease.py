"""When a rollout's lease on its model may be taken over."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

from edgewave.tasks.rollout.lease import Owner, busy_message, new_lease

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


def test_a_live_owner_keeps_its_lease_until_it_runs_out() -> None:
    lease = new_lease("ro-m-v2-x", 2, "rollout", NOW, 600)
    assert lease.stale(NOW + timedelta(seconds=599)) is None, "this process is alive"
    assert "ran out" in lease.stale(NOW + timedelta(seconds=600))


def test_an_owner_on_another_machine_is_trusted_until_its_lease_runs_out() -> None:
    lease = new_lease("ro-m-v2-x", 2, "rollout", NOW, 600, Owner("plant-controller-7", 1))
    assert lease.stale(NOW + timedelta(seconds=60)) is None, "its pid says nothing about a process here"
    assert lease.stale(NOW + timedelta(hours=1)) is not None


def test_a_dead_owner_on_this_machine_is_stale_at_once() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = new_lease("ro-m-v2-x", 2, "rollout", NOW, 600, Owner(Owner.me().host, int(dead.stdout)))
    assert "no longer running" in lease.stale(NOW)
    assert os.getpid() != int(dead.stdout)


def test_the_refusal_names_the_running_rollout_and_its_owner() -> None:
    lease = new_lease("ro-m-v2-20261127T120000000Z", 2, "rollout", NOW, 600, Owner("ctl", 42))
    message = busy_message("m", lease)
    assert "ro-m-v2-20261127T120000000Z" in message and "ctl:42" in message and "--wait" in message
