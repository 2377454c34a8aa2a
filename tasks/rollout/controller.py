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

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Literal

from pydantic import BaseModel, Field

from edgewave.serving.desired import DesiredState
from edgewave.tasks.rollout.analysis import Measurement, decide, measure
from edgewave.tasks.rollout.gitops import DesiredStateRepo, HistoryRewritten
from edgewave.tasks.rollout.policy import FleetFile, Site, plan_waves
from edgewave.tasks.rollout.telemetry import Reading, Window, combine, scrape, window

Status = Literal["running", "succeeded", "rolled_back", "held", "noop"]


def policy_hash(fleet_file: FleetFile) -> str:
    return hashlib.sha256(fleet_file.model_dump_json().encode()).hexdigest()


def rollout_id(model: str, version: int, fleet_file: FleetFile) -> str:
    return f"ro-{model}-v{version}-{policy_hash(fleet_file)[:8]}"


class WaveRecord(BaseModel):
    index: int
    name: str
    sites: list[str]
    status: Literal["pending", "committed", "advanced", "rolled_back", "held"] = "pending"
    deferred: list[str] = Field(default_factory=list, description="Unreachable before the commit, re-queued.")
    failed: list[str] = Field(default_factory=list, description="Sites counted failed (offline policy).")
    converged: list[str] = Field(default_factory=list)
    decision: str | None = None
    reason: str | None = None
    measurements: list[dict] = Field(default_factory=list)
    committed_at: datetime | None = None
    decided_at: datetime | None = None


class RolloutRecord(BaseModel):
    id: str
    model: str
    version: int
    from_version: int | None
    policy_hash: str
    previous: dict[str, dict | None] = Field(default_factory=dict, description="Desired state before this rollout.")
    waves: list[WaveRecord]
    status: Status = "running"
    reason: str | None = None
    started_at: datetime
    finished_at: datetime | None = None


@dataclass
class Io:
    """What the controller touches outside itself."""

    repo: DesiredStateRepo
    read: Callable[[list[Site]], dict[str, Reading | None]]
    sleep: Callable[[float], None] = time.sleep
    log: Callable[[str], None] = print
    now: Callable[[], datetime] = field(default=lambda: datetime.now(timezone.utc))


def scrape_sites(sites: list[Site], concurrency: int = 32) -> dict[str, Reading | None]:
    """Every site's /metrics at once; an unreachable site reads as None."""
    def one(site: Site) -> Reading | None:
        try:
            return scrape(site.scrape_url, timeout=3)
        except (OSError, ValueError):
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(sites)))) as pool:
        return dict(zip([s.id for s in sites], pool.map(one, sites)))


class Controller:
    def __init__(self, fleet_file: FleetFile, model: str, version: int, bundle_url: str, sha256: str,
                 from_version: int | None, io: Io, image: str | None = None) -> None:
        self.fleet = fleet_file.fleet
        self.policy = fleet_file.rollout
        self.model, self.version, self.bundle_url, self.sha256 = model, version, bundle_url, sha256
        self.image = image  # the serving image with this version baked in, for Kubernetes sites
        self.from_version = from_version
        self.io = io
        self.id = rollout_id(model, version, fleet_file)
        self.hash = policy_hash(fleet_file)
        self.baseline: Window | None = None
        self.own_before: dict[str, Window] = {}  # each untouched site on the old model, summed over time

    # -- record ---------------------------------------------------------------------------
    def start(self) -> RolloutRecord:
        """The record to work on: the one in Git when resuming, else a new plan."""
        self.io.repo.sync()  # plan on what the remote says now, not on an old clone
        existing = self.io.repo.record(self.id)
        if existing is not None:
            record = RolloutRecord.model_validate(existing)
            if record.status == "running" or record.status == "held":
                self.io.log(f"{self.id}: resuming at wave {self.next_wave(record) + 1}/{len(record.waves)}")
                record.status = "running"
            return record
        waves = [WaveRecord(index=i, name=name, sites=sites)
                 for i, (name, sites) in enumerate(plan_waves(self.fleet, self.policy))]
        previous = {}
        for site in self.fleet.sites:
            state = self.io.repo.read(site.id)
            previous[site.id] = state.model_dump(mode="json") if state else None
        status: Status = "noop" if self.from_version == self.version else "running"
        return RolloutRecord(id=self.id, model=self.model, version=self.version, from_version=self.from_version,
                             policy_hash=self.hash, previous=previous, waves=waves, status=status,
                             reason="already in production" if status == "noop" else None, started_at=self.io.now())

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
                            updated_at=self.io.now())

    # -- one wave ---------------------------------------------------------------------------
    def defer_unreachable(self, record: RolloutRecord, wave: WaveRecord) -> None:
        """Wait for unreachable or out-of-window sites up to the offline deadline; then count them
        failed, or move them to the next wave, as the policy says. A wave already committed (a
        resumed rollout) keeps its sites: they have been told to update."""
        if wave.status != "pending":
            return
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
        reason = f"wave {wave.index + 1}/{n} ({wave.name})"
        message = (f"{self.id}: wave {wave.index + 1}/{n} ({wave.name}) {self.model} v{self.version} -> "
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
        return commit

    def _commit(self, record: RolloutRecord, states: list[DesiredState], message: str) -> str | None:
        """Commit and push states with the record; a rewritten remote holds the rollout, saying why."""
        try:
            return self.io.repo.commit(states, message[:500], (self.id, record.model_dump(mode="json")))
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
        pending = self._wait_for_versions({s: self.version for s in wave.sites})
        wave.converged = [s for s in wave.sites if s not in pending]
        if pending:
            self.io.log(f"{self.id}: wave {wave.name}: {pending} did not report v{self.version} in time")
            if self.policy.offline.then == "fail":
                wave.failed.extend(s for s in pending if s not in wave.failed)

    def _wait_for_versions(self, want: dict[str, int]) -> list[str]:
        """Poll until each site reports its wanted version or the convergence deadline passes;
        returns the sites that did not."""
        sites = {s.id: s for s in self.fleet.sites}
        deadline = time.monotonic() + self.policy.convergence_deadline_seconds
        pending = list(want)
        while pending and time.monotonic() < deadline:
            readings = self.io.read([sites[s] for s in pending])
            pending = [s for s in pending if readings.get(s) is None or readings[s].version != want[s]]
            if pending:
                self.io.sleep(0.5)
        return pending

    def analyse(self, record: RolloutRecord, wave: WaveRecord) -> str:
        """Bake, then measure canary against baseline until a decision; returns it."""
        rules, sites = self.policy.analysis, {s.id: s for s in self.fleet.sites}
        if self.policy.bake_seconds:
            self.io.log(f"{self.id}: wave {wave.name}: baking {self.policy.bake_seconds:g}s")
            self.io.sleep(self.policy.bake_seconds)
        touched = {s for w in record.waves[: wave.index + 1] for s in w.sites}
        canary_ids = [s for w in record.waves[: wave.index + 1] for s in w.converged]  # on the new version
        measurements: list[Measurement] = []
        while True:
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
            self.io.log(f"{self.id}: wave {wave.name}: measurement {len(measurements)}: {m.verdict} ({m.reason}) "
                        f"-> {decision}")
            if decision != "measure":
                wave.decision, wave.reason, wave.decided_at = decision, reason, self.io.now()
                if decision == "advance":
                    wave.status = "advanced"
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
        commit = self._commit(record, states, message)
        if record.status == "held":
            return None
        self.io.log(message)
        pending = self._wait_for_versions({s.site: s.version for s in states})
        if pending:
            self.io.log(f"{self.id}: after rollback {pending} still do not report their previous version")
        return commit

    def finish(self, record: RolloutRecord, status: Status, reason: str) -> str | None:
        record.status, record.reason, record.finished_at = status, reason, self.io.now()
        return self._commit(record, [], f"{self.id}: {status}: {reason}")


def summary(record: RolloutRecord) -> list[dict]:
    """One row per wave for tables and artifacts."""
    return [{"wave": f"{w.index + 1}/{len(record.waves)} {w.name}", "sites": len(w.sites), "status": w.status,
             "decision": w.decision or "", "reason": (w.reason or "")[:200], "deferred": ", ".join(w.deferred),
             "failed": ", ".join(w.failed)} for w in record.waves]
