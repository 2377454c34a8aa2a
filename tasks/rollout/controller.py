"""The rollout controller: waves, convergence, canary analysis, advance or roll back.

Logic only, with its I/O handed in (`Io`): the Git desired-state repo, a telemetry reader
(site scrape or PromQL), a clock. The Prefect flow in flows/rollout.py is the one sequence of
these steps; tests and benchmarks run that flow.

State lives where it survives a crash: the desired state and a rollout record in Git (one
commit per wave, the record riding along), and the registry. The rollout id derives from the
model version and the policy's hash, so running the same rollout again continues it; a wave
already committed is not committed again (Git sees no change) and a finished rollout is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from edgewave.serving.desired import DesiredState
from edgewave.tasks.platform import progress
from edgewave.tasks.rollout.analysis import Measurement, decide, measure
from edgewave.tasks.rollout.gitops import DesiredStateRepo, HistoryRewritten, record_file
from edgewave.tasks.rollout.lease import Lease, RolloutBusy, busy_message, new_lease
from edgewave.tasks.rollout.lease import path as lease_path
from edgewave.tasks.rollout.policy import Fleet, FleetFile, RolloutPolicy, Site, plan_waves
from edgewave.tasks.rollout.record import Kind, RolloutRecord, Status, WaveRecord, attempt_id
from edgewave.tasks.rollout.telemetry import Reading, Window, combine, scrape, site_reading, window


@dataclass
class Io:
    """What the controller touches outside itself."""

    repo: DesiredStateRepo
    read: Callable[[list[Site]], dict[str, Reading | None]]
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))


def scrape_sites(sites: list[Site], concurrency: int = 32) -> dict[str, Reading | None]:
    """Every site's /metrics at once; an unreachable site reads as None. A site of several pods
    reads as their sum (`of_pods`), None only when no pod answers."""
    targets = [(site.id, pod, url) for site in sites for pod, url in site.scrape_targets.items()]

    def one(target: tuple[str, str, str]) -> Reading | None:
        try:
            return scrape(target[2], timeout=3)
        except (OSError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets)))) as pool:
        read = list(pool.map(one, targets))
    by_site: dict[str, dict[str, Reading | None]] = {site.id: {} for site in sites}
    for (site, pod, _), reading in zip(targets, read):
        by_site[site][pod] = reading
    return {site: site_reading(pods) for site, pods in by_site.items()}


class Controller:
    def __init__(self, fleet_file: FleetFile, model: str, version: int, bundle_url: str, sha256: str,
                 from_version: int | None, io: Io, image: str | None = None, kind: Kind = "rollout",
                 reason: str = "", lease_seconds: float = 600.0, wait_seconds: float = 0.0) -> None:
        self.fleet = fleet_file.fleet
        self.policy = fleet_file.rollout
        self.model, self.version, self.bundle_url, self.sha256 = model, version, bundle_url, sha256
        self.image = image  # the serving image with this version baked in, for Kubernetes sites
        self.from_version = from_version
        self.io = io
        self.kind, self.reason = kind, reason
        self.lease_seconds, self.wait_seconds = lease_seconds, wait_seconds
        self.id = attempt_id(model, version, kind, io.now())
        self.lease: Lease | None = None  # ours, once taken
        self.baseline: Window | None = None
        self.own_before: dict[str, Window] = {}  # each untouched site on the old model, summed over time

    # -- start: one rollout per model, resumed or planned ----------------------------------------
    def start(self) -> RolloutRecord:
        """Take the model's lease and return the attempt to work on.

        A running attempt of another owner refuses this one (or, with `wait_seconds`, is waited
        for). An attempt whose owner is gone is resumed when it is the same version and kind,
        otherwise superseded. (One whose promotion was interrupted was finished before this, by
        steps.finish_interrupted_promotion.) A new plan returns sites that an unfinished earlier
        attempt left half-way to where that attempt found them, not to its half-way state.
        """
        repo = self.io.repo
        repo.sync()  # plan on what the remote says now, not on an old clone
        held_by = self._wait_for_lease()
        inherited: dict[str, dict | None] = {}
        superseded = None
        if held_by is not None:  # a lease whose owner is gone
            why = held_by.stale(self.io.now())
            old = self._record(held_by.rollout_id)
            if old is not None and old.status == "running" and old.version == self.version and old.kind == self.kind:
                return self._resume(old, held_by, why)
            if old is not None and old.status == "running":
                old.status, old.reason, old.finished_at = "superseded", f"superseded by {self.id}: {why}", self.io.now()
                superseded = old
        last = superseded or self._last_attempt()
        if last is not None and last.status in ("held", "superseded"):
            inherited = {s: last.previous.get(s) for w in last.waves if w.status != "pending" for s in w.sites}
        record = self._plan(inherited)
        if record.status == "noop":
            if held_by is not None:
                self._commit_lease(None, f"{held_by.rollout_id}: lease released (owner gone)", held_by)
            return record
        self.lease = new_lease(self.id, self.version, self.kind, self.io.now(), self.lease_seconds)
        extra = dict([record_file(superseded.id, superseded.model_dump(mode="json"))]) if superseded else {}
        sites = sum(len(w.sites) for w in record.waves)
        self._commit_lease(self.lease, f"{self.id}: started ({self.kind} of {self.model} v{self.version}, {sites} "
                           f"sites in {len(record.waves)} waves){f'; {self.reason}' if self.reason else ''}",
                           held_by, record, extra)
        return record

    def _wait_for_lease(self) -> Lease | None:
        """The lease of another attempt whose owner is gone, after waiting for a live one if asked."""
        waited = 0.0
        while True:
            lease = self._read_lease()
            if lease is None or lease.rollout_id == self.id:
                return None
            if lease.stale(self.io.now()):
                return lease
            if waited >= self.wait_seconds:
                raise RolloutBusy(busy_message(self.model, lease))
            self.io.log(f"{self.id}: waiting for {lease.rollout_id} (owner {lease.owner()}) to finish")
            self.io.sleep(5.0)
            waited += 5.0
            self.io.repo.sync()

    def _plan(self, inherited: dict[str, dict | None]) -> RolloutRecord:
        waves = [WaveRecord(index=i, name=name, sites=sites)
                 for i, (name, sites) in enumerate(plan_waves(self.fleet, self.policy))]
        current = {site.id: self.io.repo.read(site.id) for site in self.fleet.sites}
        previous = {site: (inherited[site] if site in inherited else state.model_dump(mode="json") if state else None)
                    for site, state in current.items()}
        everywhere = all(s is not None and s.version == self.version and s.sha256 == self.sha256
                         for s in current.values())
        noop = everywhere and self.from_version == self.version
        return RolloutRecord(
            id=self.id, kind=self.kind, model=self.model, version=self.version, from_version=self.from_version,
            requested_reason=self.reason, policy=self.policy.model_dump(mode="json"),
            fleet=self.fleet.model_dump(mode="json"), previous=previous, waves=waves,
            status="noop" if noop else "running", reason="already in production on every site" if noop else None,
            started_at=self.io.now())

    def _resume(self, record: RolloutRecord, stale: Lease, why: str | None) -> RolloutRecord:
        """Continue an interrupted attempt on its recorded plan, under a lease of our own."""
        self.id = record.id
        self.policy, self.fleet = RolloutPolicy.model_validate(record.policy), Fleet.model_validate(record.fleet)
        self.lease = new_lease(self.id, self.version, self.kind, self.io.now(), self.lease_seconds)
        self._commit_lease(self.lease, f"{self.id}: resumed by {self.lease.owner()} ({why})", stale)
        self.io.log(f"{self.id}: resuming at wave {self.next_wave(record) + 1}/{len(record.waves)} ({why})")
        return record

    def _record(self, rollout_id: str) -> RolloutRecord | None:
        data = self.io.repo.record(rollout_id)
        return RolloutRecord.model_validate(data) if data else None

    def _last_attempt(self) -> RolloutRecord | None:
        """The model's most recent attempt in the repository, whatever became of it."""
        found = [r for r in (self._record(p.stem) for p in (self.io.repo.path / "rollouts").glob("*.json"))
                 if r is not None and r.model == self.model]
        return max(found, key=lambda r: r.started_at) if found else None

    # -- the lease ---------------------------------------------------------------------------------
    def _read_lease(self) -> Lease | None:
        text = self.io.repo.read_file(lease_path(self.model))
        return Lease.model_validate_json(text) if text else None

    def _commit_lease(self, lease: Lease | None, message: str, expected: Lease | None = None,
                      record: RolloutRecord | None = None, extra: dict[str, str | None] | None = None) -> str | None:
        """Write (or with None remove) the lease, and the record, in one commit; refused if the lease
        is no longer ours or what we found (someone took it meanwhile)."""
        def still_ours(repo) -> None:
            current = self._read_lease()
            if current is None or current.rollout_id == self.id:
                return
            if expected is not None and current.rollout_id == expected.rollout_id and current.owner() == expected.owner():
                return
            raise RolloutBusy(busy_message(self.model, current))

        files = {lease_path(self.model): lease.model_dump_json(indent=1) + "\n" if lease else None, **(extra or {})}
        return self.io.repo.commit([], message[:500], (record.id, record.model_dump(mode="json")) if record else None,
                                   extra=files, precondition=still_ours)

    def keep_lease(self) -> None:
        """Renew our lease once half its time is gone (called between steps and measurements)."""
        if self.lease is None:
            return
        now = self.io.now()
        if (self.lease.expires_at - now).total_seconds() > self.lease_seconds / 2:
            return
        self.lease = self.lease.model_copy(update={"expires_at": now + timedelta(seconds=self.lease_seconds)})
        self._commit_lease(self.lease, f"{self.id}: lease renewed until {self.lease.expires_at:%H:%M:%S} UTC")

    def release(self, record: RolloutRecord) -> str | None:
        """Give up the lease after the attempt's last step (for a success: after @production moved)."""
        self.lease = None
        return self._commit_lease(None, f"{record.id}: {record.status}; lease released")

    @staticmethod
    def next_wave(record: RolloutRecord) -> int:
        for wave in record.waves:
            if wave.status != "advanced":
                return wave.index
        return len(record.waves)

    def desired(self, site: str, reason: str) -> DesiredState:
        image = self.image if self.fleet.site(site).kind == "k8s" else None
        if self.fleet.site(site).kind == "k8s" and not image:
            raise ValueError(f"site {site} runs on Kubernetes, but {self.model} v{self.version} has no serving image")
        return DesiredState(site=site, model=self.model, version=self.version, bundle_url=self.bundle_url,
                            sha256=self.sha256, rollout_id=self.id, image=image, reason=reason,
                            rollback=self.kind == "rollback", updated_at=self.io.now())

    def _still_ours(self, repo) -> None:
        if self.lease is None:
            return
        current = self._read_lease()
        if current is None or current.rollout_id != self.id:
            raise RolloutBusy(f"{self.id} lost its lease" + (f": {busy_message(self.model, current)}" if current else ""))

    def show(self, line: str, done: int, total: int, detail: str) -> None:
        """Where this attempt stands, for a person watching (tasks/platform/progress.py)."""
        progress.report(f"{self.kind} v{self.version}", line, done, total, detail)

    # -- one wave ---------------------------------------------------------------------------
    def defer_unreachable(self, record: RolloutRecord, wave: WaveRecord) -> None:
        """Wait for unreachable or out-of-window sites up to the offline deadline; then count them
        failed, or move them to the next wave, as the policy says. A wave already committed (a
        resumed rollout) keeps its sites: they have been told to update."""
        if wave.status != "pending":
            return
        self.keep_lease()
        sites = {s.id: s for s in self.fleet.sites}
        deadline = time.monotonic() + self.policy.offline.deadline_seconds
        while True:
            moment = self.io.now()
            readings = self.io.read([sites[s] for s in wave.sites])
            waiting = [s for s in wave.sites if readings.get(s) is None or not sites[s].in_maintenance(moment)]
            if not waiting or time.monotonic() >= deadline:
                break
            self.io.log(f"{self.id}: wave {wave.name}: waiting for {waiting} (unreachable or outside maintenance)")
            self.io.sleep(min(2.0, self.policy.analysis.interval_seconds))
        if not waiting:
            return
        wave.sites = [s for s in wave.sites if s not in waiting]
        if self.policy.offline.then == "fail":
            wave.failed.extend(waiting)
            self.io.log(f"{self.id}: wave {wave.name}: {waiting} unreachable past the deadline, counted failed")
        elif wave.index + 1 < len(record.waves):
            record.waves[wave.index + 1].sites = waiting + record.waves[wave.index + 1].sites
            wave.deferred.extend(waiting)
            self.io.log(f"{self.id}: wave {wave.name}: {waiting} unreachable, re-queued to the next wave")
        else:
            wave.deferred.extend(waiting)
            self.io.log(f"{self.id}: wave {wave.name}: {waiting} unreachable in the last wave, skipped")

    def commit_wave(self, record: RolloutRecord, wave: WaveRecord) -> str | None:
        n = len(record.waves)
        what = "rollback wave" if self.kind == "rollback" else "wave"
        reason = f"{what} {wave.index + 1}/{n} ({wave.name})" + (f": {self.reason}" if self.reason else "")
        message = (f"{self.id}: {what} {wave.index + 1}/{n} ({wave.name}) {self.model} v{self.version} -> "
                   f"{', '.join(wave.sites) or 'no sites'}")
        if wave.status != "pending":  # resumed: the states and the record went to Git in one commit
            self.io.log(f"{message} (already committed)")
            return None
        wave.status, wave.committed_at = "committed", self.io.now()
        commit = self._commit(record, [self.desired(s, reason) for s in wave.sites], message)
        if record.status == "held":
            wave.status, wave.committed_at, wave.reason = "held", None, record.reason
            return None
        self.io.log(message + f" (pushed {commit[:12]})" if commit else message)
        self.show("waves", wave.index, n, f"{wave.name}: {len(wave.sites)} site(s) told")
        return commit

    def _commit(self, record: RolloutRecord, states: list[DesiredState], message: str,
                lease: str = "keep") -> str | None:
        """Commit and push states with the record (and our lease kept, marked `promoting`, or
        released); a rewritten remote holds the rollout, saying why."""
        extra: dict[str, str | None] = {}
        if self.lease is not None and lease == "release":
            extra[lease_path(self.model)], self.lease = None, None
        elif self.lease is not None and lease == "promoting":
            self.lease = self.lease.model_copy(update={"phase": "promoting"})
            extra[lease_path(self.model)] = self.lease.model_dump_json(indent=1) + "\n"
        try:
            return self.io.repo.commit(states, message[:500], (self.id, record.model_dump(mode="json")), extra=extra,
                                       precondition=self._still_ours)
        except HistoryRewritten as exc:
            record.status, record.reason, record.finished_at = "held", str(exc), self.io.now()
            self.io.log(f"{self.id}: held: {exc}")
            return None

    def observe_before(self, record: RolloutRecord, wave: WaveRecord) -> None:
        """Before a wave changes its sites, know how they behave on the old model.

        Earlier waves' measurements already watched untouched sites; what is still missing
        (the first wave, a resumed rollout) is read now over `interval × measurements`.
        """
        if self.from_version is None or wave.status != "pending":
            return
        self.keep_lease()
        missing = [s for s in wave.sites if s not in self.own_before]
        if not missing:
            return
        rules, sites = self.policy.analysis, {s.id: s for s in self.fleet.sites}
        seconds = rules.interval_seconds * rules.measurements
        self.io.log(f"{self.id}: wave {wave.name}: watching {len(missing)} site(s) on v{self.from_version} for {seconds:g}s")
        before = self.io.read([sites[s] for s in missing])
        self.io.sleep(seconds)
        after = self.io.read([sites[s] for s in missing])
        self._remember_own(missing, before, after)

    def _remember_own(self, site_ids: list[str], before: dict, after: dict) -> None:
        for s in site_ids:
            if before.get(s) and after.get(s) and after[s].version == self.from_version:
                w = window(before[s], after[s], s)
                self.own_before[s] = combine([self.own_before[s], w]) if s in self.own_before else w

    def converge(self, wave: WaveRecord) -> None:
        """Wait until the wave's sites report the new version, up to the convergence deadline."""
        self.keep_lease()
        pending = self._wait_for_versions({s: self.version for s in wave.sites}, f"wave {wave.name}")
        wave.converged = [s for s in wave.sites if s not in pending]
        if pending:
            self.io.log(f"{self.id}: wave {wave.name}: {pending} did not report v{self.version} in time")
            if self.policy.offline.then == "fail":
                wave.failed.extend(s for s in pending if s not in wave.failed)

    def _wait_for_versions(self, want: dict[str, int], label: str) -> list[str]:
        """Poll until each site reports its wanted version or the convergence deadline passes;
        returns the sites that did not."""
        sites = {s.id: s for s in self.fleet.sites}
        deadline = time.monotonic() + self.policy.convergence_deadline_seconds
        pending = list(want)
        self.show("sites converged", 0, len(want), label)
        while pending and time.monotonic() < deadline:
            readings = self.io.read([sites[s] for s in pending])
            pending = [s for s in pending if readings.get(s) is None or readings[s].version != want[s]]
            self.show("sites converged", len(want) - len(pending), len(want), label)
            if pending:
                self.io.sleep(0.5)
        return pending

    def analyse(self, record: RolloutRecord, wave: WaveRecord) -> str:
        """Bake, then measure canary against baseline until a decision; returns it."""
        rules, sites = self.policy.analysis, {s.id: s for s in self.fleet.sites}
        self.show("measurements", 0, rules.measurements, f"wave {wave.name}: baking")
        if self.policy.bake_seconds:
            self.io.log(f"{self.id}: wave {wave.name}: baking {self.policy.bake_seconds:g}s")
            self.io.sleep(self.policy.bake_seconds)
        touched = {s for w in record.waves[: wave.index + 1] for s in w.sites}
        canary_ids = [s for w in record.waves[: wave.index + 1] for s in w.converged]  # on the new version
        measurements: list[Measurement] = []
        while True:
            self.keep_lease()
            population = [sites[s] for s in sites]
            before = self.io.read(population)
            self.io.sleep(rules.interval_seconds)
            after = self.io.read(population)
            windows = {s: window(before[s], after[s], s) if before.get(s) and after.get(s) else None for s in sites}
            baseline_windows = [w for s, w in windows.items() if w is not None and s not in touched
                                and after[s].version == self.from_version]
            self._remember_own([s for s in sites if s not in touched], before, after)
            if baseline_windows:
                self.baseline = combine(baseline_windows)
            canaries = {s: windows[s] for s in canary_ids}
            first_rollout = self.from_version is None
            m = measure(canaries, self.baseline, rules, self.policy.abort, absolute_only=first_rollout,
                        own=self.own_before)
            if wave.failed:  # sites the offline policy counts failed weigh in the abort share
                judged = [j for j in m.sites if j.verdict != "inconclusive"]
                share = len(wave.failed) / max(1, len(judged) + len(wave.failed))
                if share > self.policy.abort.max_failed_site_share:
                    m = Measurement("fail", f"{wave.failed} counted failed (offline); {m.reason}", m.sites, m.baseline_sites)
            measurements.append(m)
            wave.measurements.append({"at": self.io.now().isoformat(), "verdict": m.verdict, "reason": m.reason,
                                      "baseline_sites": list(m.baseline_sites),
                                      "sites": [j.as_dict() for j in m.sites]})
            decision, reason = decide(measurements, rules)
            self.show("measurements", len(measurements), max(rules.measurements, len(measurements)),
                      f"wave {wave.name}: {m.verdict} → {decision}")
            self.io.log(f"{self.id}: wave {wave.name}: measurement {len(measurements)}: {m.verdict} ({m.reason}) "
                        f"-> {decision}")
            if decision != "measure":
                wave.decision, wave.reason, wave.decided_at = decision, reason, self.io.now()
                if decision == "advance":
                    wave.status = "advanced"
                    self.show("waves", wave.index + 1, len(record.waves), f"{wave.name} advanced")
                elif decision == "hold":
                    wave.status = "held"
                return decision

    def rollback(self, record: RolloutRecord, wave: WaveRecord) -> str | None:
        """One commit returning every touched site to its previous desired state; then wait for them."""
        touched = [s for w in record.waves[: wave.index + 1] for s in w.sites]
        states = []
        for site in touched:
            previous = record.previous.get(site)
            if previous is not None:
                states.append(DesiredState.model_validate({**previous, "rollout_id": f"{self.id}-rollback",
                                                            "reason": f"rollback of {self.id}: {wave.reason}",
                                                            "rollback": True, "updated_at": self.io.now()}))
        orphans = [s for s in touched if record.previous.get(s) is None]
        if orphans:  # a first deployment has nothing to return to
            self.io.log(f"{self.id}: {orphans} had no model before this rollout; they keep v{self.version}")
        wave.status = "rolled_back"
        record.status, record.reason, record.finished_at = "rolled_back", wave.reason, self.io.now()
        message = f"{self.id}: rollback after wave {wave.index + 1}/{len(record.waves)} ({wave.name}): {wave.reason}"
        commit = self._commit(record, states, message, lease="release")
        if record.status == "held":
            return None
        self.io.log(message)
        self.show("waves", wave.index, len(record.waves), f"rolled back at {wave.name}")
        pending = self._wait_for_versions({s.site: s.version for s in states}, "rollback")
        if pending:
            self.io.log(f"{self.id}: after rollback {pending} still do not report their previous version")
        return commit

    def finish(self, record: RolloutRecord, status: Status, reason: str) -> str | None:
        """The record's final state, in one commit with the lease: kept as `promoting` after a success
        (released once @production moved, so a crash in between is repaired by the next run), else released."""
        record.status, record.reason, record.finished_at = status, reason, self.io.now()
        return self._commit(record, [], f"{self.id}: {status}: {reason}",
                            lease="promoting" if status == "succeeded" else "release")
