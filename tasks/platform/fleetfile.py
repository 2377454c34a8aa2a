"""The fleet and its rollout policy: pydantic models loaded from one YAML file.

A bad file fails here, at load, with the field path in the message, before anything is
deployed. Waves are resolved against the fleet at load too, so a wave that would select no
site is an error naming the wave rather than a silent no-op.
"""

from __future__ import annotations

import math
from datetime import datetime
from datetime import time as clock
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgewave.serving.errors import Actionable, validated_yaml_file

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SiteId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][\w.-]*$")]


def _unique(values: list, what: str) -> None:
    """Raise naming the values that occur more than once."""
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"{what}: {repeated}")


class PolicyError(ValueError, Actionable):
    """The fleet or rollout policy file is invalid; the message names the field."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MaintenanceWindow(_Model):
    """Updates are allowed from `start` to `end` (local time of the site) on `days`."""

    days: list[Day] = Field(default_factory=lambda: list(DAYS), min_length=1)
    start: clock
    end: clock

    def contains(self, moment: datetime) -> bool:
        day, now = DAYS[moment.weekday()], moment.time()
        if self.start <= self.end:
            return day in self.days and self.start <= now < self.end
        # a window over midnight belongs to the day it starts on
        previous = DAYS[(moment.weekday() - 1) % 7]
        return (day in self.days and now >= self.start) or (previous in self.days and now < self.end)


class Site(_Model):
    id: SiteId
    kind: Literal["local", "agent", "k8s"] = "local"
    labels: dict[str, str] = Field(default_factory=dict)
    port: int | None = Field(default=None, ge=1024, le=65535, description="Loopback port of a local site.")
    metrics_url: str | None = Field(default=None, description="Where its /metrics is scraped; local sites derive it.")
    pod_metrics_urls: dict[str, str] = Field(
        default_factory=dict, description="A site of several pods scraped without Kubernetes discovery: each "
        "pod's /metrics by pod name. Each is its own scrape target labelled `pod`; readings are summed per site, "
        "and the site has converged only when every pod serves the new version.")
    timezone: str = "UTC"
    maintenance_windows: list[MaintenanceWindow] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @model_validator(mode="after")
    def _reachable(self) -> Site:
        if self.metrics_url is None and self.port is None:
            raise ValueError("give a port (local sites) or a metrics_url")
        return self

    @property
    def base_url(self) -> str:
        if self.metrics_url:
            return self.metrics_url.removesuffix("/metrics")
        return f"http://127.0.0.1:{self.port}"

    @property
    def scrape_url(self) -> str:
        return self.metrics_url or f"{self.base_url}/metrics"

    @property
    def scrape_targets(self) -> dict[str, str]:
        """Pod name → /metrics URL; one unnamed target for a site that is one process."""
        return dict(self.pod_metrics_urls) or {"": self.scrape_url}

    def in_maintenance(self, moment: datetime) -> bool:
        """True when an update may happen now (always, if the site has no windows)."""
        if not self.maintenance_windows:
            return True
        local = moment.astimezone(ZoneInfo(self.timezone))
        return any(w.contains(local) for w in self.maintenance_windows)


class Wave(_Model):
    """Which of the sites not yet updated this wave takes: by labels, a count or a percentage."""

    name: str = Field(min_length=1)
    selector: dict[str, str] | None = None
    count: int | None = Field(default=None, ge=1)
    percent: float | None = Field(default=None, gt=0, le=100)
    manual_gate: bool = Field(default=False, description="After this wave advanced, pause until a person approves "
                              "the next wave or rejects it (a rollback), with a reason, in the Prefect UI.")
    manual_gate_timeout_seconds: float = Field(default=86_400, gt=0, description="No answer by then: the attempt is "
                                               "held where it stands (sites keep what they run).")

    @model_validator(mode="after")
    def _one_rule(self) -> Wave:
        if sum(x is not None for x in (self.selector, self.count, self.percent)) != 1:
            raise ValueError("give exactly one of selector, count or percent")
        return self


class Analysis(_Model):
    interval_seconds: float = Field(default=5.0, gt=0)
    measurements: int = Field(default=3, ge=1)
    min_requests_per_site: int = Field(default=50, ge=1, description="Fewer requests in the window: inconclusive.")
    max_error_rate: float = Field(default=0.01, ge=0, le=1, description="Share of 5xx among predict requests.")
    max_p99_latency_ratio: float = Field(default=1.5, gt=0, description="Canary p99 / baseline p99.")
    p99_floor_seconds: float = Field(
        default=0.02, ge=0, description="A canary p99 below this passes the latency check whatever the ratio: over a "
        "short window of millisecond requests one scheduling hiccup is the p99.")
    min_confidence_ratio: float = Field(default=0.9, gt=0, description="Canary mean confidence / baseline.")
    max_failure_rate_shift: float = Field(default=0.05, ge=0, le=1,
                                          description="|canary - baseline| share of rows predicted 'failure'.")
    inconclusive_limit: int = Field(default=3, ge=1, description="Inconclusive measurements before the fallback.")
    on_inconclusive: Literal["hold", "fail"] = "hold"
    judge: Literal["controls", "own"] = Field(
        default="controls", description="controls: the wave's changed sites against sites that did not change, over "
        "the same window, each against itself before the wave (difference in differences; see "
        "tasks/rollout/controls.py). own: each changed site against its own past only, which blames the model when "
        "the whole plant slows down. With no site left to be a control, `controls` judges as `own`.")
    false_alarm_rate: float = Field(
        default=0.01, gt=0, lt=0.5, description="The chance, accepted per wave, that a good model fails a "
        "statistical test by luck: each test runs at false_alarm_rate / (3 x measurements).")
    on_environment_shift: Literal["pass", "inconclusive"] = Field(
        default="pass", description="When the controls shifted as much as the changed sites: pass (the difference "
        "in differences has taken the shift out) or inconclusive (wait for calm). Never a rollback.")
    max_p99_seconds: float | None = Field(
        default=None, gt=0, description="An absolute ceiling (the plant's SLO): a changed site whose p99 is above "
        "it fails, whatever the controls do.")


class Abort(_Model):
    max_failed_site_share: float = Field(default=0.0, ge=0, le=1, description="Failed / judged sites above this: roll back.")
    min_sites_judged: int = Field(default=1, ge=1, description="Fewer judged sites: the wave is inconclusive.")


class Offline(_Model):
    deadline_seconds: float = Field(default=60.0, gt=0, description="How long an unreachable site is waited for.")
    then: Literal["fail", "skip"] = Field(default="skip", description="fail: count it failed; skip: re-queue it next wave.")


class RolloutPolicy(_Model):
    waves: list[Wave] = Field(min_length=1)
    rounding: Literal["up", "down", "nearest"] = Field(
        default="up", description="How a percentage of the remaining sites becomes a site count.")
    bake_seconds: float = Field(default=30.0, ge=0)
    convergence_deadline_seconds: float = Field(default=60.0, gt=0)
    analysis: Analysis = Field(default_factory=Analysis)
    abort: Abort = Field(default_factory=Abort)
    concurrency: int = Field(default=10, ge=1)
    offline: Offline = Field(default_factory=Offline)

    @field_validator("waves")
    @classmethod
    def _unique_names(cls, waves: list[Wave]) -> list[Wave]:
        _unique([w.name for w in waves], "wave names must be unique")
        return waves


class Fleet(_Model):
    sites: list[Site] = Field(min_length=1)

    @field_validator("sites")
    @classmethod
    def _unique_ids(cls, sites: list[Site]) -> list[Site]:
        _unique([s.id for s in sites], "site ids must be unique")
        _unique([s.port for s in sites if s.port is not None], "ports used by more than one site")
        return sites

    def site(self, site_id: str) -> Site:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"no site {site_id!r} in the fleet")


class DriftPolicy(_Model):
    """When per-site Evidently results become "drift detected" for the fleet.

    A site's check window is drifted when at least `drift_share` of the model's input columns
    drifted; a site is confirmed after `consecutive_windows` drifted windows in a row on the
    same model version; the fleet event fires when `min_sites` sites are confirmed.
    """

    drift_share: float = Field(default=0.15, gt=0, le=1, description="Share of input columns that must drift.")
    min_samples: int = Field(default=500, ge=50, description="Fewer new rows: the site waits for the next check.")
    max_rows: int = Field(default=5_000, ge=100, description="Most recent rows a check compares (all new rows count).")
    consecutive_windows: int = Field(default=2, ge=1)
    min_sites: int = Field(default=1, ge=1)
    method: str = Field(default="wasserstein", min_length=1, description=(
        "Evidently stat test for every column, so thresholds keep their units whatever the sample size "
        "(Evidently's own default switches to K-S p-values under 1,000 reference rows)."))
    threshold: float = Field(default=0.2, gt=0, description="Drift threshold (in the method's units) of a column without its own.")
    column_thresholds: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)
    cooldown_minutes: float = Field(default=60.0, ge=0, description="No second event for the model within this.")
    reports_kept: int = Field(default=5, ge=1, description="Checks whose HTML reports stay in the state dir.")


class FleetFile(_Model):
    fleet: Fleet
    rollout: RolloutPolicy
    drift: DriftPolicy = Field(default_factory=DriftPolicy)

    @model_validator(mode="after")
    def _waves_resolve(self) -> FleetFile:
        plan_waves(self.fleet, self.rollout)  # raises naming the wave
        if self.drift.min_sites > len(self.fleet.sites):
            raise ValueError(f"drift.min_sites: {self.drift.min_sites} but the fleet has {len(self.fleet.sites)} sites")
        return self


def wave_size(percent: float, remaining: int, rounding: str) -> int:
    """The explicit rule: a percentage of the sites still to update, rounded as configured."""
    exact = round(remaining * percent / 100, 9)  # 50 % of 10 is 5, not 5.000000001
    if rounding == "up":
        return math.ceil(exact)
    if rounding == "down":
        return math.floor(exact)
    return math.floor(exact + 0.5)


def plan_waves(fleet: Fleet, policy: RolloutPolicy) -> list[tuple[str, list[str]]]:
    """Resolve waves to site ids in fleet order; the first wave is the canary.

    Raises ValueError naming the wave (index and name) that would select no site, the
    selector label no site has, or the sites no wave covers.
    """
    remaining = [s for s in fleet.sites]
    known_labels = {k for s in fleet.sites for k in s.labels}
    plan: list[tuple[str, list[str]]] = []
    for index, wave in enumerate(policy.waves):
        where = f"rollout.waves.{index} ({wave.name})"
        if wave.selector is not None:
            unknown = sorted(set(wave.selector) - known_labels)
            if unknown:
                raise ValueError(f"{where}.selector: no site has the label(s) {unknown}")
            chosen = [s for s in remaining if all(s.labels.get(k) == v for k, v in wave.selector.items())]
        elif wave.count is not None:
            chosen = remaining[: wave.count]
        else:
            assert wave.percent is not None, "a wave names a selector, a count or a percent (Wave's validator)"
            n = wave_size(wave.percent, len(remaining), policy.rounding)
            chosen = remaining[:n]
        if not chosen:
            rule = (f"selector {wave.selector}" if wave.selector is not None else f"count {wave.count}"
                    if wave.count is not None else f"{wave.percent:g} % of {len(remaining)} rounded {policy.rounding}")
            raise ValueError(f"{where}: selects 0 sites ({rule}, {len(remaining)} sites left)")
        taken = {s.id for s in chosen}  # by id: comparing Site models pairwise took 14 s at 5,000 sites
        plan.append((wave.name, [s.id for s in chosen]))
        remaining = [s for s in remaining if s.id not in taken]
    if remaining:
        raise ValueError(f"rollout.waves: sites not covered by any wave: {[s.id for s in remaining]} "
                         "(end with a wave of percent: 100)")
    return plan


def load_fleet_file(path: str | Path) -> FleetFile:
    """Load and validate a fleet + rollout policy file; PolicyError names the field."""
    return validated_yaml_file(path, FleetFile, PolicyError)
