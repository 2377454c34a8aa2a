"""Canary analysis: the verdicts and how a wave decides on them; and the judgement of each site
against its own past (`judge: own`), which the judgement against concurrent controls
(tasks/rollout/controls.py, the default) falls back to when no site is left to be a control.

Own-history judgement: canary sites against their own behaviour on the old model, or against
baseline sites over the same window when a site has no such history.

Sites are not alike (a plant whose tools wear faster predicts more failures whatever the
model), so a canary's confidence and predicted-failure rate are compared with what the same
site did just before it changed, on the same traffic; the fleet baseline is the fallback.

Pure functions. Missing, empty or NaN data is "inconclusive", never a pass; a wave advances
only when every measurement passed, rolls back as soon as the share of failed sites among the
judged ones exceeds the abort limit, and after too many inconclusive measurements holds or
fails as the policy says.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from edgewave.tasks.platform.fleetfile import Abort, Analysis
from edgewave.tasks.rollout.telemetry import Window

Verdict = Literal["pass", "fail", "inconclusive"]
Decision = Literal["advance", "rollback", "hold", "measure"]


def without_nan(fields: dict) -> dict:
    """A judgement's fields for JSON (the rollout record): NaN, "no data", as null."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in fields.items()}


@dataclass(frozen=True)
class SiteJudgement:
    site: str
    verdict: Verdict
    reasons: list[str]
    requests: float
    error_rate: float
    p99_ratio: float
    confidence_ratio: float
    failure_rate_shift: float
    compared_with: str = "fleet"  # "own" (the site before it changed), "fleet" (baseline sites now), "controls"

    def as_dict(self) -> dict:
        return without_nan(asdict(self))


@dataclass(frozen=True)
class MetricJudgement:
    """One metric of one measurement, with the four numbers a person checks the verdict against."""

    metric: str
    verdict: Verdict
    changed_before: float
    changed_now: float
    controls_before: float
    controls_now: float
    effect: float  # ratio of ratios (latency, confidence) or difference in differences (positive rate)
    limit: str
    p_value: float
    environment: bool  # the controls shifted beyond the limit too
    note: str

    def as_dict(self) -> dict:
        return without_nan(asdict(self))

    def line(self) -> str:
        """`latency: changed 2.1→9.8 ms, controls 2.0→9.1 ms, effect 1.05 (fails > 2), p=0.41: pass (…)`."""
        c = cells(self.as_dict())
        return (f"{self.metric}: changed {c['changed']}, controls {c['controls']}, effect {c['effect']} "
                f"(fails {self.limit}), p={c['p']}: {c['verdict']}")


def cells(metric: dict) -> dict[str, str]:
    """A judged metric as recorded (`MetricJudgement.as_dict`), as a person reads it in a table or a log line."""
    def show(v: float | None) -> str:
        return "-" if v is None else f"{v * 1000:.1f} ms" if metric["metric"] == "latency" else f"{v:.3g}"

    def number(v: float | None, spec: str) -> str:
        return "-" if v is None else format(v, spec)
    return {"metric": metric["metric"],
            "changed": f"{show(metric['changed_before'])}→{show(metric['changed_now'])}",
            "controls": f"{show(metric['controls_before'])}→{show(metric['controls_now'])}",
            "effect": number(metric["effect"], ".3g"), "fails if": metric["limit"], "p": number(metric["p_value"], ".2g"),
            "verdict": metric["verdict"] + (f" ({metric['note']})" if metric["note"] else "")}


@dataclass(frozen=True)
class Measurement:
    """One analysis interval: every canary site judged, and what that means for the wave."""

    verdict: Verdict
    reason: str
    sites: list[SiteJudgement] = field(default_factory=list)
    baseline_sites: tuple[str, ...] = ()  # the controls, or the fleet baseline
    metrics: list[MetricJudgement] = field(default_factory=list)  # judged against concurrent controls


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def judge_site(site: str, canary: Window | None, baseline: Window | None, rules: Analysis,
               absolute_only: bool = False) -> SiteJudgement:
    """pass / fail / inconclusive for one canary site; fail wins over inconclusive.

    `absolute_only` is for a first rollout, when no site runs an older model to compare with:
    only the error rate and the minimum traffic are judged.
    """
    if canary is None:
        return SiteJudgement(site, "inconclusive", ["no telemetry (site unreachable)"], 0, math.nan, math.nan,
                             math.nan, math.nan)
    error_rate = canary.error_rate
    p99_ratio = _ratio(canary.p99, baseline.p99) if baseline else math.nan
    confidence_ratio = _ratio(canary.mean_confidence, baseline.mean_confidence) if baseline else math.nan
    shift = abs(canary.failure_rate - baseline.failure_rate) if baseline else math.nan
    failures, unknown = [], []
    if canary.requests < rules.min_requests_per_site:
        unknown.append(f"{canary.requests:.0f} requests < {rules.min_requests_per_site}")
    checks = [
        ("error rate", error_rate, lambda v: v > rules.max_error_rate, f"> {rules.max_error_rate:g}"),
        ("p99 ratio", p99_ratio,
         lambda v: v > rules.max_p99_latency_ratio and canary.p99 > rules.p99_floor_seconds,
         f"> {rules.max_p99_latency_ratio:g} (p99 {canary.p99 * 1000:.1f} ms)"),
        ("confidence ratio", confidence_ratio, lambda v: v < rules.min_confidence_ratio, f"< {rules.min_confidence_ratio:g}"),
        ("failure-rate shift", shift, lambda v: v > rules.max_failure_rate_shift, f"> {rules.max_failure_rate_shift:g}"),
    ]
    if absolute_only:
        checks = checks[:1]
    for name, value, bad, limit in checks:
        if math.isnan(value):
            unknown.append(f"{name}: no data" + ("" if baseline else " (no baseline)"))
        elif bad(value):
            failures.append(f"{name} {value:.4g} {limit}")
    # Too few requests makes every number noise: never fail or pass a site on them.
    if canary.requests < rules.min_requests_per_site:
        verdict: Verdict = "inconclusive"
    else:
        verdict = "fail" if failures else "inconclusive" if unknown else "pass"
    return SiteJudgement(site, verdict, failures + unknown, canary.requests, error_rate, p99_ratio,
                         confidence_ratio, shift)


def measure(canaries: dict[str, Window | None], baseline: Window | None, rules: Analysis,
            abort: Abort, absolute_only: bool = False, own: dict[str, Window] | None = None) -> Measurement:
    """Judge every canary site in one window and combine by the abort criteria.

    `own` holds each site's window on the old model (before it changed); a site found there
    is judged against itself, the others against the fleet `baseline`.
    """
    own = own or {}
    sites = [replace(judge_site(site, window, own.get(site, baseline), rules, absolute_only),
                     compared_with="own" if site in own else "fleet")
             for site, window in sorted(canaries.items())]
    judged = [s for s in sites if s.verdict != "inconclusive"]
    failed = [s for s in judged if s.verdict == "fail"]
    base = baseline.sites if baseline else ()
    if judged and len(failed) / len(judged) > abort.max_failed_site_share:
        return Measurement("fail", f"{len(failed)} of {len(judged)} judged sites failed "
                                   f"(limit {abort.max_failed_site_share:.0%}): "
                                   + "; ".join(f"{s.site}: {', '.join(s.reasons)}" for s in failed), sites, base)
    if len(judged) < abort.min_sites_judged:
        return Measurement("inconclusive", f"{len(judged)} sites judged, need {abort.min_sites_judged}: "
                                           + "; ".join(f"{s.site}: {', '.join(s.reasons)}" for s in sites), sites, base)
    return Measurement("pass", f"{len(judged)} sites judged, {len(failed)} failed", sites, base)


def decide(measurements: list[Measurement], rules: Analysis) -> tuple[Decision, str]:
    """What the controller does after the measurements so far of one wave."""
    if any(m.verdict == "fail" for m in measurements):
        return "rollback", next(m.reason for m in measurements if m.verdict == "fail")
    inconclusive = sum(m.verdict == "inconclusive" for m in measurements)
    if inconclusive >= rules.inconclusive_limit:
        reason = f"{inconclusive} inconclusive measurements (limit {rules.inconclusive_limit}): {measurements[-1].reason}"
        return ("rollback" if rules.on_inconclusive == "fail" else "hold"), reason
    passed = sum(m.verdict == "pass" for m in measurements)
    if passed >= rules.measurements:
        return "advance", f"{passed} of {rules.measurements} measurements passed"
    return "measure", f"{passed} passed, {inconclusive} inconclusive so far"
