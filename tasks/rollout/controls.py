"""Canary judgement against concurrent controls: a difference in differences per metric.

A site compared only with its own past blames the model for whatever slowed the whole plant
(another workload on the edge server, a network hiccup, a shift change in traffic). So each
measurement compares the sites that changed in this wave ("changed") with sites whose version
did not change in it ("controls": still on the old version, or upgraded in an earlier wave),
over the same windows (every window of the wave so far: each measurement adds power), and both
groups with themselves before the wave ("before": the previous wave's measurements, or a watch
before the first wave). A shift the controls show too is the
environment's; only what the changed sites show beyond it is the model's.

Per metric, a statistical test and an effect size must both speak (Kayenta judges the same way):
- latency: Mann–Whitney U on the request-latency histograms, changed now against controls now
  ("changed slower"); effect: p99 changed/controls now over the same ratio before; fails above
  `max_p99_latency_ratio` (and above the p99 floor).
- confidence: Mann–Whitney on the confidence histograms ("changed less confident"); effect:
  mean-confidence ratio changed/controls now over the ratio before; fails below
  `min_confidence_ratio`.
- positive rate (rows predicted failure, images predicted defect): a z test of the difference
  in differences of the two proportions, its variance the rows' sampling plus how much the
  controls' rates moved on their own from site to site (a site's traffic changes over time);
  fails when it moved more than `max_failure_rate_shift`.
- absolute rules per changed site, no statistics: error rate above `max_error_rate`, and p99
  above `max_p99_seconds` (an SLO the plant sets) when set.

Error rates: each test runs at α = false_alarm_rate / (3 × measurements) (Bonferroni), so a
good model passes a wave's measurements with probability ≥ 1 − false_alarm_rate when samples
are independent; the effect limits keep a tiny but significant difference from failing a wave.

The controls shifted too (same test and limit, controls now against before): the metric says
"environment", and per `on_environment_shift` passes (the difference in differences has taken
the shift out) or is inconclusive (wait for calm). Never a rollback.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from edgewave.tasks.platform.fleetfile import Abort, Analysis
from edgewave.tasks.rollout.analysis import Measurement, MetricJudgement, SiteJudgement, Verdict
from edgewave.tasks.rollout.stats import mann_whitney, shift_in_shifts
from edgewave.tasks.rollout.telemetry import Window, combine

TESTS_PER_MEASUREMENT = 3  # latency, confidence, positive rate


@dataclass(frozen=True)
class Groups:
    """Pooled windows: the changed sites and the controls, now and before the wave."""

    changed: Window
    controls: Window
    changed_before: Window | None = None
    controls_before: Window | None = None
    changed_sites: int = 1
    # each control site's own positive-rate change since before, and the part of its variance the
    # sampling of rows explains
    control_shifts: tuple[tuple[float, float], ...] = ()


def between_sites(g: Groups) -> float:
    """How much a site's positive rate moves on its own beyond the sampling of rows (a site's traffic
    changes over time), learnt from the controls' own changes: their variance less what sampling
    explains (DerSimonian–Laird's moment estimate, never below 0), for the difference of a mean of
    `changed_sites` and one of the controls. 0 with fewer than two controls to learn it from."""
    shifts = [shift for shift, _ in g.control_shifts]
    if len(shifts) < 2:
        return 0.0
    mean = sum(shifts) / len(shifts)
    spread = sum((x - mean) ** 2 for x in shifts) / (len(shifts) - 1)
    sampling = sum(v for _, v in g.control_shifts) / len(shifts)
    return max(0.0, spread - sampling) * (1 / g.changed_sites + 1 / len(shifts))


def _shift(now: Window, before: Window) -> tuple[float, float]:
    """A site's positive-rate change and its sampling variance."""
    def var(w: Window) -> float:
        return w.failure_rate * (1 - w.failure_rate) / w.rows
    return now.failure_rate - before.failure_rate, var(now) + var(before)


def alpha(rules: Analysis) -> float:
    """The level of each test (Bonferroni over a wave's tests)."""
    return rules.false_alarm_rate / (TESTS_PER_MEASUREMENT * rules.measurements)


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def _relative(now: float, controls_now: float, before: float, controls_before: float) -> float:
    """now/controls_now over before/controls_before; the plain ratio now when there is no before."""
    concurrent = _ratio(now, controls_now)
    earlier = _ratio(before, controls_before)
    return concurrent if math.isnan(earlier) else _ratio(concurrent, earlier)


def _verdict(bad: bool, significant: bool, environment: bool, rules: Analysis,
             missing: bool) -> tuple[Verdict, str]:
    if missing:
        return "inconclusive", "no data"
    if bad and significant:
        return "fail", "changed sites only"
    if environment:
        note = "the controls shifted too: the environment's"
        return ("inconclusive", note + ", waiting for calm") if rules.on_environment_shift == "inconclusive" \
            else ("pass", note)
    return "pass", "" if not bad else "not significant"


def latency(g: Groups, rules: Analysis) -> MetricJudgement:
    level = alpha(rules)
    before = g.changed_before.p99 if g.changed_before else math.nan
    controls_before = g.controls_before.p99 if g.controls_before else math.nan
    effect = _relative(g.changed.p99, g.controls.p99, before, controls_before)
    _, p = mann_whitney(g.changed.latency_buckets, g.controls.latency_buckets)
    bad = effect > rules.max_p99_latency_ratio and g.changed.p99 > rules.p99_floor_seconds
    shifted = False
    if g.controls_before:
        _, p_env = mann_whitney(g.controls.latency_buckets, g.controls_before.latency_buckets)
        shifted = p_env < level and _ratio(g.controls.p99, controls_before) > rules.max_p99_latency_ratio
    verdict, note = _verdict(bad, p < level, shifted, rules, math.isnan(effect))
    return MetricJudgement("latency", verdict, before, g.changed.p99, controls_before, g.controls.p99, effect,
                           f"> {rules.max_p99_latency_ratio:g}", p, shifted, note)


def confidence(g: Groups, rules: Analysis) -> MetricJudgement:
    level = alpha(rules)
    before = g.changed_before.mean_confidence if g.changed_before else math.nan
    controls_before = g.controls_before.mean_confidence if g.controls_before else math.nan
    effect = _relative(g.changed.mean_confidence, g.controls.mean_confidence, before, controls_before)
    histograms = bool(g.changed.confidence_buckets and g.controls.confidence_buckets)
    # changed less confident; a site older than its confidence histogram is judged on the effect alone
    p = mann_whitney(g.controls.confidence_buckets, g.changed.confidence_buckets)[1] if histograms else math.nan
    bad = effect < rules.min_confidence_ratio
    shifted = False
    if g.controls_before and g.controls_before.confidence_buckets and g.controls.confidence_buckets:
        _, p_env = mann_whitney(g.controls_before.confidence_buckets, g.controls.confidence_buckets)
        shifted = p_env < level and _ratio(g.controls.mean_confidence, controls_before) < rules.min_confidence_ratio
    verdict, note = _verdict(bad, p < level or not histograms, shifted, rules, math.isnan(effect))
    return MetricJudgement("confidence", verdict, before, g.changed.mean_confidence, controls_before,
                           g.controls.mean_confidence, effect, f"< {rules.min_confidence_ratio:g}", p, shifted, note)


def _proportion(w: Window | None) -> tuple[float, float] | None:
    return (w.failures_predicted, w.rows) if w is not None else None


def positive_rate(g: Groups, rules: Analysis) -> MetricJudgement:
    level = alpha(rules)
    effect, p = shift_in_shifts((g.changed.failures_predicted, g.changed.rows),
                                (g.controls.failures_predicted, g.controls.rows),
                                _proportion(g.changed_before), _proportion(g.controls_before), between_sites(g))
    bad = abs(effect) > rules.max_failure_rate_shift
    shifted = False
    if g.controls_before:
        moved, p_env = shift_in_shifts((g.controls.failures_predicted, g.controls.rows),
                                       (g.controls_before.failures_predicted, g.controls_before.rows), None, None)
        shifted = p_env < level and abs(moved) > rules.max_failure_rate_shift
    verdict, note = _verdict(bad, p < level, shifted, rules, math.isnan(effect))
    return MetricJudgement(
        "positive rate", verdict, g.changed_before.failure_rate if g.changed_before else math.nan,
        g.changed.failure_rate, g.controls_before.failure_rate if g.controls_before else math.nan,
        g.controls.failure_rate, effect, f"|shift| > {rules.max_failure_rate_shift:g}", p, shifted, note)


def site_rows(canaries: dict[str, Window | None], controls: Window, before: dict[str, Window],
              controls_before: Window | None, rules: Analysis) -> list[SiteJudgement]:
    """Each changed site against the controls, for a person; the absolute rules (error rate, the
    p99 ceiling) fail a site, the statistical ones judge the changed sites together."""
    rows = []
    for site, w in sorted(canaries.items()):
        if w is None:
            rows.append(SiteJudgement(site, "inconclusive", ["no telemetry (site unreachable)"], 0, math.nan, math.nan,
                                      math.nan, math.nan, "controls"))
            continue
        own = before.get(site)
        shift, _ = shift_in_shifts((w.failures_predicted, w.rows), (controls.failures_predicted, controls.rows),
                                   _proportion(own), _proportion(controls_before))
        failures, unknown = [], []
        if w.requests < rules.min_requests_per_site:
            unknown.append(f"{w.requests:.0f} requests < {rules.min_requests_per_site}")
        elif w.error_rate > rules.max_error_rate:
            failures.append(f"error rate {w.error_rate:.4g} > {rules.max_error_rate:g}")
        if w.requests >= rules.min_requests_per_site and rules.max_p99_seconds is not None \
                and w.p99 > rules.max_p99_seconds:
            failures.append(f"p99 {w.p99 * 1000:.1f} ms > the ceiling {rules.max_p99_seconds * 1000:g} ms")
        verdict: Verdict = "inconclusive" if unknown else "fail" if failures else "pass"
        rows.append(SiteJudgement(
            site, verdict, failures + unknown, w.requests, w.error_rate,
            _relative(w.p99, controls.p99, own.p99 if own else math.nan,
                      controls_before.p99 if controls_before else math.nan),
            _relative(w.mean_confidence, controls.mean_confidence, own.mean_confidence if own else math.nan,
                      controls_before.mean_confidence if controls_before else math.nan),
            shift, "controls"))
    return rows


def measure_with_controls(canaries: dict[str, Window | None], controls: dict[str, Window],
                          before: dict[str, Window], rules: Analysis, abort: Abort) -> Measurement | None:
    """Judge one window: the changed sites (`canaries`, None: unreachable) against the `controls`
    over the same window, each site's `before` taken from the previous measurements. Sites below
    `min_requests_per_site` are left out of both groups; None when that leaves no control."""
    enough = {s: w for s, w in controls.items() if w.requests >= rules.min_requests_per_site}
    pooled_controls = combine(list(enough.values()))
    control_ids = tuple(sorted(enough))
    if pooled_controls is None:
        return None
    controls_before = combine([before[s] for s in enough if s in before]) if all(s in before for s in enough) else None
    sites = site_rows(canaries, pooled_controls, before, controls_before, rules)
    judged = [s for s in sites if s.verdict != "inconclusive"]
    changed_ids = [s.site for s in judged]
    failed = [s for s in judged if s.verdict == "fail"]
    if judged and len(failed) / len(judged) > abort.max_failed_site_share:
        return Measurement("fail", f"{len(failed)} of {len(judged)} changed sites over an absolute limit: "
                           + "; ".join(f"{s.site}: {', '.join(s.reasons)}" for s in failed), sites, control_ids)
    if len(judged) < abort.min_sites_judged:
        return Measurement("inconclusive", f"{len(judged)} changed sites judged, need {abort.min_sites_judged}: "
                           + "; ".join(f"{s.site}: {', '.join(s.reasons)}" for s in sites), sites, control_ids)
    changed = combine([w for s, w in canaries.items() if s in changed_ids and w is not None])
    assert changed is not None  # judged is not empty
    changed_before = combine([before[s] for s in changed_ids]) if all(s in before for s in changed_ids) else None
    shifts = tuple(_shift(w, before[s]) for s, w in enough.items() if s in before and w.rows > 0 and before[s].rows > 0)
    groups = Groups(changed, pooled_controls, changed_before, controls_before, len(changed_ids), shifts)
    metrics = [latency(groups, rules), confidence(groups, rules), positive_rate(groups, rules)]
    against = f"{len(changed_ids)} changed site(s) against {len(control_ids)} control(s)"
    failing = [m for m in metrics if m.verdict == "fail"]
    if failing:
        return Measurement("fail", f"{against}: " + "; ".join(m.line() for m in failing), sites, control_ids,
                           metrics)
    unknown = [m for m in metrics if m.verdict == "inconclusive"]
    if unknown:
        return Measurement("inconclusive", f"{against}: " + "; ".join(m.line() for m in unknown), sites,
                           control_ids, metrics)
    environment = [m.metric for m in metrics if m.environment]
    return Measurement("pass", f"{against}: no metric moved beyond the controls"
                       + (f" (the controls' {', '.join(environment)} shifted too: the environment's)"
                          if environment else ""), sites, control_ids, metrics)
