"""Canary verdicts from real exposition text (produced by the site's own metrics code)."""

from __future__ import annotations

import math

import pytest

from edgewave.serving.metrics import SiteMetrics
from edgewave.tasks.platform.fleetfile import Abort, Analysis, Site
from edgewave.tasks.rollout.analysis import decide, judge_site, measure
from edgewave.tasks.rollout.telemetry import Window, combine, parse, quantile, window, wrong_site

RULES = Analysis(min_requests_per_site=50, max_error_rate=0.01, max_p99_latency_ratio=1.5, min_confidence_ratio=0.9,
                 max_failure_rate_shift=0.05, measurements=2, inconclusive_limit=2, on_inconclusive="hold")


def traffic(metrics: SiteMetrics, n: int, latency: float, confidence: float, failure_share: float,
            errors: int = 0) -> None:
    hot = metrics.hot
    for _ in range(n):
        metrics.observe_request("/v1/predict", 200, latency)
        hot.confidence.observe(confidence)
    for _ in range(errors):
        metrics.observe_request("/v1/predict", 500, latency)
    hot.rows += n
    failures = round(n * failure_share)
    hot.predicted["failure"] = hot.predicted.get("failure", 0) + failures
    hot.predicted["ok"] = hot.predicted.get("ok", 0) + n - failures
    hot.positive += failures  # as serving/app.py counts them


def site_window(n: int, latency: float = 0.002, confidence: float = 0.95, failure_share: float = 0.03,
                errors: int = 0, name: str = "s") -> Window:
    metrics = SiteMetrics(name)
    metrics.serving("m", 2, "a" * 64)
    traffic(metrics, 10, latency, confidence, failure_share)  # before the window
    before = parse(metrics.exposition().decode())
    traffic(metrics, n, latency, confidence, failure_share, errors)
    return window(before, parse(metrics.exposition().decode()), name)


def test_a_reading_parses_the_sites_real_exposition() -> None:
    metrics = SiteMetrics("s")
    metrics.serving("m", 7, "b" * 64)
    traffic(metrics, 100, 0.002, 0.8, 0.1, errors=3)
    metrics.observe_request("/v1/predict", 422, 0.001)  # client errors are not the model's errors
    reading = parse(metrics.exposition().decode())
    assert reading.version == 7 and reading.ok == 100 and reading.errors == 3
    assert reading.rows == 100 and reading.failures_predicted == 10
    assert reading.confidence_sum / reading.confidence_count == pytest.approx(0.8)


def test_a_reading_says_who_answered_and_only_the_site_of_this_fleet_is_taken_for_it() -> None:
    site = Site(id="line-1", port=20001)
    ours, theirs, unnamed = (parse(SiteMetrics("line-1", fleet).exposition().decode()) for fleet in ("f-a", "f-b", None))
    assert (ours.site_id, ours.fleet_id, unnamed.fleet_id) == ("line-1", "f-a", None)
    assert wrong_site(ours.site_id, ours.fleet_id, site, "f-a", "http://x/metrics") is None
    assert wrong_site(theirs.site_id, theirs.fleet_id, site, "f-a", "http://x/metrics") == \
        "wrong site at http://x/metrics: expected line-1 of fleet f-a, found line-1 of fleet f-b"
    assert "found line-1 of no fleet" in (wrong_site(unnamed.site_id, unnamed.fleet_id, site, "f-a", "u") or "")
    other = parse(SiteMetrics("line-2", "f-a").exposition().decode())
    assert "found line-2 of fleet f-a" in (wrong_site(other.site_id, other.fleet_id, site, "f-a", "u") or "")
    assert "states no site id" in (wrong_site(None, None, site, "f-a", "u") or ""), "a process that is no site"


def test_window_differences_and_p99_follow_histogram_quantile() -> None:
    w = site_window(200, latency=0.0025)
    assert w.requests == 200 and w.error_rate == 0
    assert 0.002 < w.p99 <= 0.003  # inside the (2 ms, 3 ms] bucket
    assert math.isnan(quantile(0.99, ((0.001, 0.0), (math.inf, 0.0))))


def test_similar_canary_passes() -> None:
    base = combine([site_window(300, name="b1"), site_window(300, name="b2")])
    judged = judge_site("c", site_window(120), base, RULES)
    assert judged.verdict == "pass", judged.reasons


@pytest.mark.parametrize(("canary", "reason"), [
    (dict(errors=5), "error rate"),
    (dict(latency=0.08), "p99 ratio"),
    (dict(confidence=0.6), "confidence ratio"),
    (dict(failure_share=0.3), "failure-rate shift"),
])
def test_a_worse_canary_fails_on_the_right_check(canary: dict, reason: str) -> None:
    base = combine([site_window(300, name="b1")])
    judged = judge_site("c", site_window(120, **canary), base, RULES)
    assert judged.verdict == "fail" and any(r.startswith(reason) for r in judged.reasons), judged.reasons


def test_no_traffic_no_telemetry_or_no_baseline_is_inconclusive_never_pass() -> None:
    base = combine([site_window(300, name="b1")])
    assert judge_site("c", site_window(0), base, RULES).verdict == "inconclusive"
    assert judge_site("c", site_window(20, errors=20), base, RULES).verdict == "inconclusive"  # too few to judge
    assert judge_site("c", None, base, RULES).verdict == "inconclusive"
    no_base = judge_site("c", site_window(200), None, RULES)
    assert no_base.verdict == "inconclusive" and any("no baseline" in r for r in no_base.reasons)


def test_measurements_decide_advance_rollback_or_hold() -> None:
    abort = Abort(max_failed_site_share=0.0, min_sites_judged=1)
    base = combine([site_window(300, name="b1")])
    good = measure({"c1": site_window(100, name="c1")}, base, RULES, abort)
    bad = measure({"c1": site_window(100, name="c1", confidence=0.5)}, base, RULES, abort)
    quiet = measure({"c1": site_window(0, name="c1")}, base, RULES, abort)
    assert (good.verdict, bad.verdict, quiet.verdict) == ("pass", "fail", "inconclusive")
    assert decide([good], RULES)[0] == "measure"
    assert decide([good, good], RULES)[0] == "advance"
    assert decide([good, bad], RULES)[0] == "rollback"
    assert decide([quiet], RULES)[0] == "measure"
    assert decide([quiet, quiet], RULES)[0] == "hold"
    strict = RULES.model_copy(update={"on_inconclusive": "fail"})
    assert decide([quiet, quiet], strict)[0] == "rollback"


def test_abort_share_tolerates_some_failed_sites_when_configured() -> None:
    base = combine([site_window(300, name="b1")])
    canaries = {f"c{i}": site_window(100, name=f"c{i}", confidence=0.5 if i == 0 else 0.95) for i in range(4)}
    assert measure(canaries, base, RULES, Abort(max_failed_site_share=0.25)).verdict == "pass"
    assert measure(canaries, base, RULES, Abort(max_failed_site_share=0.2)).verdict == "fail"
    assert measure(canaries, base, RULES, Abort(max_failed_site_share=0.25, min_sites_judged=5)).verdict == "inconclusive"


def test_a_first_rollout_is_judged_on_error_rate_and_traffic_only() -> None:
    assert judge_site("c", site_window(100, confidence=0.5), None, RULES, absolute_only=True).verdict == "pass"
    assert judge_site("c", site_window(100, errors=10), None, RULES, absolute_only=True).verdict == "fail"
    assert judge_site("c", site_window(5), None, RULES, absolute_only=True).verdict == "inconclusive"


def test_a_latency_ratio_below_the_absolute_floor_is_not_a_failure() -> None:
    base = combine([site_window(300, latency=0.0004, name="b1")])
    judged = judge_site("c", site_window(120, latency=0.004), base, RULES)  # 10x, but 4 ms
    assert judged.verdict == "pass", judged.reasons
    assert judged.p99_ratio > RULES.max_p99_latency_ratio


def test_a_site_unlike_the_baseline_is_judged_against_its_own_history() -> None:
    """A plant with worn tools predicts many failures on any model: compared with healthy
    baseline sites it would look broken, compared with itself before the update it is not."""
    abort = Abort(max_failed_site_share=0.0, min_sites_judged=1)
    healthy_fleet = combine([site_window(300, name="b1", failure_share=0.03)])
    worn = site_window(100, name="worn", failure_share=0.30)
    worn_before = site_window(150, name="worn", failure_share=0.31)
    assert measure({"worn": worn}, healthy_fleet, RULES, abort).verdict == "fail"
    judged = measure({"worn": worn}, healthy_fleet, RULES, abort, own={"worn": worn_before})
    assert judged.verdict == "pass" and judged.sites[0].compared_with == "own"
    broken = site_window(100, name="worn", failure_share=0.30, confidence=0.6)
    assert measure({"worn": broken}, healthy_fleet, RULES, abort, own={"worn": worn_before}).verdict == "fail"


def test_positive_predictions_count_defects_and_an_older_sites_failure_label_still_reads() -> None:
    from edgewave.tasks.rollout.telemetry import parse

    common = "edgewave_model_version 3\nedgewave_predicted_rows_total 50\n"
    newer = parse(common + 'edgewave_predictions_total{label="scratch"} 4\nedgewave_predictions_total{label="good"} 46\n'
                  "edgewave_positive_predictions_total 4\n")
    older = parse(common + 'edgewave_predictions_total{label="failure"} 6\nedgewave_predictions_total{label="ok"} 44\n')
    assert (newer.failures_predicted, older.failures_predicted) == (4, 6)
    assert newer.rows == older.rows == 50
