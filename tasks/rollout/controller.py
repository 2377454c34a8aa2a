"""The rollout controller: waves, convergence, canary analysis, advance or roll back.

Logic only, with its I/O handed in (`Io`): the Git desired-state repo, a telemetry reader
(site scrape or PromQL), a clock. The model's lease is tasks/rollout/lease.py's `ModelLease`.
The Prefect flow in flows/rollout.py is the one sequence of these steps; tests and benchmarks
run that flow.

Each step takes the attempt's record (and what earlier measurements saw, `Observed`) and
returns a new one; the controller itself holds only what was decided before the first step,
so a step works the same on any task runner and a record handed to a step is never changed.
The plan (sites, waves, policy) is the record's own, frozen at the start: a resumed attempt
continues it even if the fleet file was edited meanwhile.

State lives where it survives a crash: the desired state and a rollout record in Git (one
commit per wave, the record riding along), and the registry. The rollout id derives from the
model version and the policy's hash, so running the same rollout again continues it; a wave
already committed is not committed again (Git sees no change) and a finished rollout is a no-op.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Literal

from edgewave.serving.desired import DesiredState
from edgewave.tasks.platform import progress
from edgewave.tasks.platform.fleetfile import Fleet, FleetFile, RolloutPolicy, Site, plan_waves
from edgewave.tasks.rollout.analysis import Measurement, decide, measure
from edgewave.tasks.rollout.controls import measure_with_controls
from edgewave.tasks.rollout.gitops import DesiredStateRepo, HistoryRewritten, record_file
from edgewave.tasks.rollout.lease import Lease, ModelLease, new_lease
from edgewave.tasks.rollout.record import Kind, RolloutRecord, Status, WaveRecord, attempt_id, with_approval
from edgewave.tasks.rollout.telemetry import Reading, Window, combine, window


@dataclass
class Io:
    """What the controller touches outside itself."""

    repo: DesiredStateRepo
    read: Callable[[list[Site]], dict[str, Reading | None]]
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Observed:
    """What measurements saw: the latest baseline (untouched sites, summed), each untouched site's own
    behaviour on the old model (summed over time), and every site's latest windows (`recent`)."""

    baseline: Window | None = None
    own: dict[str, Window] = field(default_factory=dict)
    # every site's windows over the latest wave's measurements (or the watch before the first wave):
    # what the next wave's changed sites and its controls did before it changed anything
    recent: dict[str, Window] = field(default_factory=dict)

    def with_own(self, site_ids: list[str], before: dict, after: dict, version: int | None) -> Observed:
        own = dict(self.own)
        for s in site_ids:
            if before.get(s) and after.get(s) and after[s].version == version:
                w = window(before[s], after[s], s)
                own[s] = combine([own[s], w]) or w if s in own else w
        return replace(self, own=own)


def next_wave(record: RolloutRecord) -> int:
    """The index of the first wave that has not advanced (len(waves) when all have)."""
    for wave in record.waves:
        if wave.status != "advanced":
            return wave.index
    return len(record.waves)


def plan_of(record: RolloutRecord) -> tuple[Fleet, RolloutPolicy]:
    """The fleet and policy the attempt was planned with."""
    return Fleet.model_validate(record.fleet), RolloutPolicy.model_validate(record.policy)


class Controller:
    """What a rollout attempt knows before its first step: the version and its bundle, the fleet
    file, the I/O, and the model's lease. Its steps return new records and change nothing of its own
    but a memo of validated plans, which any process rebuilds from the record."""

    def __init__(self, fleet_file: FleetFile, model: str, version: int, bundle_url: str, sha256: str,
                 from_version: int | None, io: Io, image: str | None = None, kind: Kind = "rollout",
                 reason: str = "", lease_seconds: float = 600.0, wait_seconds: float = 0.0,
                 fleet_id: str | None = None) -> None:
        self.fleet = fleet_file.fleet
        self.policy = fleet_file.rollout
        self.model, self.version, self.bundle_url, self.sha256 = model, version, bundle_url, sha256
        self.image = image  # the serving image with this version baked in, for Kubernetes sites
        self.from_version = from_version
        self.io = io
        self.kind: Kind = kind
        self.reason = reason
        self.wait_seconds = wait_seconds
        self.fleet_id = fleet_id  # written into each desired state (a Kubernetes site's pods state it)
        self.lease = ModelLease(io.repo, model, lease_seconds, io.now)
        self.id = attempt_id(model, version, kind, io.now())  # a new attempt's id; a resumed one keeps its own
        self._plans: dict[str, tuple[Fleet, RolloutPolicy]] = {}  # a memo: an attempt's plan never changes

    def plan(self, record: RolloutRecord) -> tuple[Fleet, RolloutPolicy]:
        """The attempt's fleet and policy (`plan_of`), validated once per attempt: 0.16 s at 2,000 sites."""
        if record.id not in self._plans:
            self._plans[record.id] = plan_of(record)
        return self._plans[record.id]

    # -- start: one rollout per model, resumed or planned ----------------------------------------
    def start(self) -> RolloutRecord:
        """Take the model's lease and return the attempt to work on.

        A running attempt of another owner refuses this one (or, with `wait_seconds`, is waited
        for). An attempt whose owner is gone is resumed when it is the same version and kind,
        otherwise superseded. (One whose promotion was interrupted was finished before this, by
        steps.finish_interrupted_promotion.) A new plan returns sites that an unfinished earlier
        attempt left half-way to where that attempt found them, not to its half-way state.
        """
        self.io.repo.sync()  # plan on what the remote says now, not on an old clone
        held_by = self.lease.wait_for_others(self.id, self.wait_seconds, self.io.sleep, self.io.log)
        inherited: dict[str, dict | None] = {}
        superseded = None
        if held_by is not None:  # a lease whose owner is gone
            why = held_by.stale(self.io.now())
            old = self._record(held_by.rollout_id)
            if old is not None and old.status == "running" and old.version == self.version and old.kind == self.kind:
                return self._resume(old, held_by, why)
            if old is not None and old.status == "running":
                superseded = old.model_copy(update={"status": "superseded", "reason": f"superseded by {self.id}: {why}",
                                                    "finished_at": self.io.now()})
        last = superseded or self._last_attempt()
        if last is not None and last.status in ("held", "superseded"):
            inherited = {s: last.previous.get(s) for w in last.waves if w.status != "pending" for s in w.sites}
        record = self._plan(inherited)
        if record.status == "noop":
            if held_by is not None:
                self.lease.commit(None, f"{held_by.rollout_id}: lease released (owner gone)", self.id, held_by)
            return record
        lease = new_lease(self.id, self.version, self.kind, self.io.now(), self.lease.seconds)
        extra: dict[str, str | None] = dict([record_file(superseded.id, superseded.model_dump(mode="json"))]) \
            if superseded else {}
        sites = sum(len(w.sites) for w in record.waves)
        self.lease.commit(lease, f"{self.id}: started ({self.kind} of {self.model} v{self.version}, {sites} "
                          f"sites in {len(record.waves)} waves){f'; {self.reason}' if self.reason else ''}",
                          self.id, held_by, (record.id, record.model_dump(mode="json")), extra)
        return record

    def _plan(self, inherited: dict[str, dict | None]) -> RolloutRecord:
        waves = [WaveRecord(index=i, name=name, sites=sites)
                 for i, (name, sites) in enumerate(plan_waves(self.fleet, self.policy))]
        current = {site.id: self.io.repo.read(site.id) for site in self.fleet.sites}
        previous: dict[str, dict | None] = {
            site: (inherited[site] if site in inherited else state.model_dump(mode="json") if state else None)
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
        lease = new_lease(record.id, self.version, self.kind, self.io.now(), self.lease.seconds)
        self.lease.commit(lease, f"{record.id}: resumed by {lease.owner()} ({why})", record.id, stale)
        self.io.log(f"{record.id}: resuming at wave {next_wave(record) + 1}/{len(record.waves)} ({why})")
        return record

    def _record(self, rollout_id: str) -> RolloutRecord | None:
        data = self.io.repo.record(rollout_id)
        return RolloutRecord.model_validate(data) if data else None

    def _last_attempt(self) -> RolloutRecord | None:
        """The model's most recent attempt in the repository, whatever became of it."""
        found = [r for r in (self._record(p.stem) for p in (self.io.repo.path / "rollouts").glob("*.json"))
                 if r is not None and r.model == self.model]
        return max(found, key=lambda r: r.started_at) if found else None

    def release(self, record: RolloutRecord) -> str | None:
        """Give up the lease after the attempt's last step (for a success: after @production moved)."""
        return self.lease.release(record.id, f"{record.id}: {record.status}; lease released")

    def desired(self, record: RolloutRecord, fleet: Fleet, site: str, reason: str) -> DesiredState:
        k8s = fleet.site(site).kind == "k8s"
        if k8s and not self.image:
            raise ValueError(f"site {site} runs on Kubernetes, but {self.model} v{self.version} has no serving image")
        return DesiredState(site=site, model=self.model, version=self.version, bundle_url=self.bundle_url,
                            sha256=self.sha256, rollout_id=record.id, image=self.image if k8s else None,
                            fleet=self.fleet_id,
                            reason=reason, rollback=self.kind == "rollback", updated_at=self.io.now())

    def show(self, line: str, done: int, total: int, detail: str) -> None:
        """Where this attempt stands, for a person watching (tasks/platform/progress.py)."""
        progress.report(f"{self.kind} v{self.version}", line, done, total, detail)

    # -- one wave ---------------------------------------------------------------------------
    def defer_unreachable(self, record: RolloutRecord, index: int) -> RolloutRecord:
        """Wait for unreachable or out-of-window sites up to the offline deadline; then count them
        failed, or move them to the next wave, as the policy says. A wave already committed (a
        resumed rollout) keeps its sites: they have been told to update."""
        if record.waves[index].status != "pending":
            return record
        self.lease.renew(record.id)
        fleet, policy = self.plan(record)
        wave = record.waves[index]
        sites = {s.id: s for s in fleet.sites}
        deadline = time.monotonic() + policy.offline.deadline_seconds
        while True:
            moment = self.io.now()
            readings = self.io.read([sites[s] for s in wave.sites])
            waiting = [s for s in wave.sites if readings.get(s) is None or not sites[s].in_maintenance(moment)]
            if not waiting or time.monotonic() >= deadline:
                break
            self.io.log(f"{record.id}: wave {wave.name}: waiting for {waiting} (unreachable or outside maintenance)")
            self.io.sleep(min(2.0, policy.analysis.interval_seconds))
        if not waiting:
            return record
        record = record.model_copy(deep=True)
        wave = record.waves[index]
        wave.sites = [s for s in wave.sites if s not in waiting]
        if policy.offline.then == "fail":
            wave.failed.extend(waiting)
            self.io.log(f"{record.id}: wave {wave.name}: {waiting} unreachable past the deadline, counted failed")
        elif index + 1 < len(record.waves):
            record.waves[index + 1].sites = waiting + record.waves[index + 1].sites
            wave.deferred.extend(waiting)
            self.io.log(f"{record.id}: wave {wave.name}: {waiting} unreachable, re-queued to the next wave")
        else:
            wave.deferred.extend(waiting)
            self.io.log(f"{record.id}: wave {wave.name}: {waiting} unreachable in the last wave, skipped")
        return record

    def commit_wave(self, record: RolloutRecord, index: int) -> RolloutRecord:
        """Tell the wave's sites the new version, in one commit with the record; a rewritten remote
        holds the rollout instead (the returned record says why)."""
        n, wave = len(record.waves), record.waves[index]
        what = "rollback wave" if self.kind == "rollback" else "wave"
        reason = f"{what} {index + 1}/{n} ({wave.name})" + (f": {self.reason}" if self.reason else "")
        message = (f"{record.id}: {what} {index + 1}/{n} ({wave.name}) {self.model} v{self.version} -> "
                   f"{', '.join(wave.sites) or 'no sites'}")
        if wave.status != "pending":  # resumed: the states and the record went to Git in one commit
            self.io.log(f"{message} (already committed)")
            return record
        fleet, _ = self.plan(record)
        record = record.model_copy(deep=True)
        wave = record.waves[index]
        wave.status, wave.committed_at = "committed", self.io.now()
        commit, held = self._commit(record, [self.desired(record, fleet, s, reason) for s in wave.sites], message)
        if held is not None:
            held.waves[index].status, held.waves[index].committed_at = "held", None
            held.waves[index].reason = held.reason
            return held
        self.io.log(message + f" (pushed {commit[:12]})" if commit else message)
        self.show("waves", index, n, f"{wave.name}: {len(wave.sites)} site(s) told")
        return record

    def _commit(self, record: RolloutRecord, states: list[DesiredState], message: str,
                lease: Literal["keep", "promoting", "release"] = "keep") -> tuple[str | None, RolloutRecord | None]:
        """Commit and push states with the record (and our lease kept, marked `promoting`, or
        released): the commit, and None; or, when the remote's history was rewritten, no commit and
        the record held, saying why."""
        try:
            commit = self.io.repo.commit(states, message[:500], (record.id, record.model_dump(mode="json")),
                                         extra=self.lease.files(record.id, lease),
                                         precondition=lambda _repo: self.lease.ensure_ours(record.id))
            return commit, None
        except HistoryRewritten as exc:
            return None, self.held_by_rewrite(record, exc)

    def held_by_rewrite(self, record: RolloutRecord, exc: HistoryRewritten) -> RolloutRecord:
        """The attempt held because the remote's history was rewritten under it: nothing more is pushed
        (its lease too stays where it is), and `edgewave reconcile` releases it once a person accepted
        the new history."""
        self.io.log(f"{record.id}: held: {exc}")
        self.io.repo.note_held_by_rewrite(record.id)
        return record.model_copy(update={"status": "held", "reason": str(exc), "finished_at": self.io.now()})

    def observe_before(self, record: RolloutRecord, index: int, observed: Observed) -> Observed:
        """Before a wave changes its sites, know how they behave on the old model.

        Earlier waves' measurements already watched untouched sites; what is still missing
        (the first wave, a resumed rollout) is read now over `interval × measurements`.
        """
        wave = record.waves[index]
        if self.from_version is None or wave.status != "pending":
            return observed
        self.lease.renew(record.id)
        fleet, policy = self.plan(record)
        rules, sites = policy.analysis, {s.id: s for s in fleet.sites}
        missing = [s for s in wave.sites if s not in observed.own]
        # judged against controls, every site's recent past is the "before" of the difference in differences
        watch = list(sites) if rules.judge == "controls" and not observed.recent else missing
        if not watch:
            return observed
        seconds = rules.interval_seconds * rules.measurements
        self.io.log(f"{record.id}: wave {wave.name}: watching {len(watch)} site(s) for {seconds:g}s before changing any")
        before = self.io.read([sites[s] for s in watch])
        self.io.sleep(seconds)
        after = self.io.read([sites[s] for s in watch])
        recent = {s: window(b, a, s) for s in watch if (b := before.get(s)) and (a := after.get(s))}
        return replace(observed.with_own(missing, before, after, self.from_version), recent=recent)

    def converge(self, record: RolloutRecord, index: int) -> RolloutRecord:
        """Wait until the wave's sites report the new version, up to the convergence deadline."""
        self.lease.renew(record.id)
        fleet, policy = self.plan(record)
        record = record.model_copy(deep=True)
        wave = record.waves[index]
        pending = self._wait_for_versions(fleet, policy, {s: self.version for s in wave.sites}, f"wave {wave.name}")
        wave.converged = [s for s in wave.sites if s not in pending]
        if pending:
            self.io.log(f"{record.id}: wave {wave.name}: {pending} did not report v{self.version} in time")
            if policy.offline.then == "fail":
                wave.failed.extend(s for s in pending if s not in wave.failed)
        return record

    def _wait_for_versions(self, fleet: Fleet, policy: RolloutPolicy, want: dict[str, int], label: str) -> list[str]:
        """Poll until each site reports its wanted version or the convergence deadline passes;
        returns the sites that did not."""
        sites = {s.id: s for s in fleet.sites}
        deadline = time.monotonic() + policy.convergence_deadline_seconds
        pending = list(want)
        self.show("sites converged", 0, len(want), label)
        while pending and time.monotonic() < deadline:
            readings = self.io.read([sites[s] for s in pending])
            pending = [s for s in pending if (r := readings.get(s)) is None or r.version != want[s]]
            self.show("sites converged", len(want) - len(pending), len(want), label)
            if pending:
                self.io.sleep(0.5)
        return pending

    def analyse(self, record: RolloutRecord, index: int, observed: Observed) -> tuple[RolloutRecord, Observed]:
        """Bake, then measure canary against baseline until a decision: the record with the wave's
        measurements and decision (`advance`, `rollback` or `hold`), and what was observed."""
        fleet, policy = self.plan(record)
        record = record.model_copy(deep=True)
        wave = record.waves[index]
        rules, sites = policy.analysis, {s.id: s for s in fleet.sites}
        self.show("measurements", 0, rules.measurements, f"wave {wave.name}: baking")
        if policy.bake_seconds:
            self.io.log(f"{record.id}: wave {wave.name}: baking {policy.bake_seconds:g}s")
            self.io.sleep(policy.bake_seconds)
        touched = {s for w in record.waves[: index + 1] for s in w.sites}
        canary_ids = [s for w in record.waves[: index + 1] for s in w.converged]  # on the new version
        earlier = {s for w in record.waves[:index] for s in w.converged}  # on the new version since earlier waves
        before_wave = observed.recent  # every site before this wave changed anything
        seen: dict[str, Window] = {}
        measurements: list[Measurement] = []
        while True:
            self.lease.renew(record.id)
            population = [sites[s] for s in sites]
            before = self.io.read(population)
            self.io.sleep(rules.interval_seconds)
            after = self.io.read(population)
            windows = {s: window(b, a, s) if (b := before.get(s)) and (a := after.get(s)) else None for s in sites}
            seen = {s: combine([seen[s], w]) or w if s in seen else w for s, w in windows.items() if w is not None}
            baseline_windows = [w for s, w in windows.items() if w is not None and s not in touched
                                and (a := after.get(s)) is not None and a.version == self.from_version]
            observed = observed.with_own([s for s in sites if s not in touched], before, after, self.from_version)
            if baseline_windows:
                observed = replace(observed, baseline=combine(baseline_windows))
            # a canary judged must still serve the wave's version: one that went back (its desired state
            # changed under the rollout, a rewritten history) is a failed site, never a pass
            went_back = {s: a.version for s in canary_ids if (a := after.get(s)) is not None and a.version != self.version}
            canaries = {s: windows[s] for s in canary_ids if s not in went_back}
            first_rollout = self.from_version is None
            own_rule = measure(canaries, observed.baseline, rules, policy.abort, absolute_only=first_rollout,
                               own=observed.own)
            # controls: sites this wave did not change, still serving what they served before it. Both groups
            # are judged on every window of the wave so far: each measurement adds power, the tests' level
            # already accounts for every look (controls.alpha)
            controls = {s: w for s, w in seen.items() if s not in wave.sites and (a := after.get(s)) is not None
                        and a.version == (self.version if s in earlier else self.from_version)}
            m = own_rule
            if rules.judge == "controls" and not first_rollout:
                m = self.judge_with_controls(wave.converged, {s: seen.get(s) for s in windows if windows[s]},
                                             went_back, controls, before_wave, own_rule, policy)
            if went_back:
                serving = ", ".join(f"{s} serves v{v}" for s, v in sorted(went_back.items()))
                m = Measurement("fail", f"{serving}, not the wave's v{self.version}; {m.reason}", m.sites,
                                m.baseline_sites)
            if wave.failed:  # sites the offline policy counts failed weigh in the abort share
                judged = [j for j in m.sites if j.verdict != "inconclusive"]
                share = len(wave.failed) / max(1, len(judged) + len(wave.failed))
                if share > policy.abort.max_failed_site_share:
                    m = Measurement("fail", f"{wave.failed} counted failed (offline); {m.reason}", m.sites, m.baseline_sites)
            measurements.append(m)
            wave.measurements.append({"at": self.io.now().isoformat(), "verdict": m.verdict, "reason": m.reason,
                                      "baseline_sites": list(m.baseline_sites),
                                      "sites": [j.as_dict() for j in m.sites],
                                      "metrics": [j.as_dict() for j in m.metrics],
                                      # what judging each site against its own past alone said of the same window
                                      "own_history": {"verdict": own_rule.verdict, "reason": own_rule.reason,
                                                      "sites": [j.as_dict() for j in own_rule.sites]}})
            decision, reason = decide(measurements, rules)
            self.show("measurements", len(measurements), max(rules.measurements, len(measurements)),
                      f"wave {wave.name}: {m.verdict} → {decision}")
            self.io.log(f"{record.id}: wave {wave.name}: measurement {len(measurements)}: {m.verdict} ({m.reason}) "
                        f"-> {decision}")
            if decision != "measure":
                wave.decision, wave.reason, wave.decided_at = decision, reason, self.io.now()
                if decision == "advance":
                    wave.status = "advanced"
                    self.show("waves", index + 1, len(record.waves), f"{wave.name} advanced")
                elif decision == "hold":
                    wave.status = "held"
                return record, replace(observed, recent=seen)

    @staticmethod
    def judge_with_controls(changed: list[str], windows: dict[str, Window | None], went_back: dict[str, int],
                            controls: dict[str, Window], before: dict[str, Window], own_rule: Measurement,
                            policy: RolloutPolicy) -> Measurement:
        """The wave's changed sites against the controls (tasks/rollout/controls.py); with no control left
        (every site changed in this wave) each site against its own past, saying so."""
        canaries = {s: windows.get(s) for s in changed if s not in went_back}
        judged = measure_with_controls(canaries, controls, before, policy.analysis, policy.abort)
        return judged or replace(own_rule, reason=f"no concurrent controls (every site changed in this wave or had "
                                                  f"too little traffic): each site against its own past; {own_rule.reason}")

    # -- a manual gate: a person decides between waves ----------------------------------------------
    def await_approval(self, record: RolloutRecord, index: int, timeout_seconds: float) -> None:
        """Before the pause: the lease covers the whole wait (no other controller takes the model while a
        person decides), and the log says where to answer."""
        wave = record.waves[index]
        self.lease.hold(record.id, timeout_seconds + self.lease.seconds, f"waiting for approval after wave {wave.name}")
        self.io.log(f"{record.id}: wave {wave.name} advanced; waiting up to {timeout_seconds / 3600:g} h for a person "
                    "to approve or reject the next wave (Resume in the Prefect UI, or `edgewave approve`)")

    def approved(self, record: RolloutRecord, index: int, approved: bool | None, reason: str) -> RolloutRecord:
        """The record after the answer (`record.with_approval`); the lease back to its usual length."""
        self.lease.hold(record.id, self.lease.seconds, "the manual gate answered")
        wave = record.waves[index]
        answer = {True: "approved", False: "REJECTED", None: "not answered"}[approved]
        self.io.log(f"{record.id}: the manual gate after wave {wave.name}: {answer}: {reason}")
        return with_approval(record, index, approved, reason, self.io.now())

    def rollback(self, record: RolloutRecord, index: int) -> RolloutRecord:
        """One commit returning every touched site to its previous desired state; then wait for them."""
        wave = record.waves[index]
        touched = [s for w in record.waves[: index + 1] for s in w.sites]
        states = []
        for site in touched:
            previous = record.previous.get(site)
            if previous is not None:
                states.append(DesiredState.model_validate({**previous, "rollout_id": f"{record.id}-rollback",
                                                            "reason": f"rollback of {record.id}: {wave.reason}",
                                                            "rollback": True, "updated_at": self.io.now()}))
        orphans = [s for s in touched if record.previous.get(s) is None]
        if orphans:  # a first deployment has nothing to return to
            self.io.log(f"{record.id}: {orphans} had no model before this rollout; they keep v{self.version}")
        record = record.model_copy(deep=True)
        record.waves[index].status = "rolled_back"
        record.status, record.reason, record.finished_at = "rolled_back", wave.reason, self.io.now()
        message = f"{record.id}: rollback after wave {index + 1}/{len(record.waves)} ({wave.name}): {wave.reason}"
        _, held = self._commit(record, states, message, lease="release")
        if held is not None:
            return held
        self.io.log(message)
        self.show("waves", index, len(record.waves), f"rolled back at {wave.name}")
        fleet, policy = self.plan(record)
        pending = self._wait_for_versions(fleet, policy, {s.site: s.version for s in states}, "rollback")
        if pending:
            self.io.log(f"{record.id}: after rollback {pending} still do not report their previous version")
        return record

    def finish(self, record: RolloutRecord, status: Status, reason: str) -> RolloutRecord:
        """The record's final state, in one commit with the lease: kept as `promoting` after a success
        (released once @production moved, so a crash in between is repaired by the next run), else released."""
        record = record.model_copy(update={"status": status, "reason": reason, "finished_at": self.io.now()})
        _, held = self._commit(record, [], f"{record.id}: {status}: {reason}",
                               lease="promoting" if status == "succeeded" else "release")
        return held or record
