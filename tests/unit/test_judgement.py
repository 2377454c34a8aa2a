"""The canary judgement against concurrent controls: the tests on histograms, and the verdicts a
busy plant, a slow model, a less confident one and one that flags more rows get. Windows come
from the site's own metrics code and exposition text, as a real scrape reads them."""

from __future__ import annotations

import math
import random
import zlib

import pytest

from edgewave.serving.metrics import SiteMetrics
from edgewave.tasks.platform.fleetfile import Abort, Analysis
from edgewave.tasks.rollout.analysis import measure
from edgewave.tasks.rollout.controls import alpha, measure_with_controls
from edgewave.tasks.rollout.stats import mann_whitney, shift_in_shifts
from edgewave.tasks.rollout.telemetry import Window, combine, parse, window

RULES = Analysis(min_requests_per_site=50, max_p99_latency_ratio=2.0, min_confidence_ratio=0.9,
                 max_failure_rate_shift=0.1, measurements=2, p99_floor_seconds=0.002)
ABORT = Abort()


def observed(site: str, n: int = 400, latency: float = 0.002, confidence: float = 0.93, positive: float = 0.05,
             errors: int = 0, seed: int = 0) -> Window:
    """A window of `n` requests at one site: latencies log-normal around `latency`, confidence spread
    below 1 around `confidence`, a share `positive` predicted positive."""
    rng = random.Random(zlib.crc32(f"{site}/{seed}".encode()))
    metrics = SiteMetrics(site)
    metrics.serving("m", 2, "a" * 64)
    first = parse(metrics.exposition().decode())
    hot = metrics.hot
    for _ in range(n):
        metrics.observe_request("/v1/predict", 200, latency * math.exp(rng.gauss(0, 0.35)))
        hot.confidence.observe(min(1.0, max(0.5, rng.gauss(confidence, 0.04))))
        hot.rows += 1
        hot.positive += rng.random() < positive
    for _ in range(errors):
        metrics.observe_request("/v1/predict", 500, latency)
    return window(first, parse(metrics.exposition().decode()), site)


def fleet(now: dict, before: dict | None = None, seed: int = 1) -> tuple[dict, dict, dict]:
    """Changed sites c1, c2 and controls k1..k3, before the wave (quiet, alike) and now (`now`:
    site → observed() arguments)."""
    ids = ["c1", "c2", "k1", "k2", "k3"]
    earlier = {s: observed(s, seed=seed, **(before or {}).get(s, {})) for s in ids}
    current = {s: observed(s, seed=seed + 1, **now.get(s, {})) for s in ids}
    return {s: current[s] for s in ids[:2]}, {s: current[s] for s in ids[2:]}, earlier


def judged(now: dict, before: dict | None = None, rules: Analysis = RULES, seed: int = 1):
    changed, controls, earlier = fleet(now, before, seed)
    m = measure_with_controls(changed, controls, earlier, rules, ABORT)
    assert m is not None
    return m, {j.metric: j for j in m.metrics}


def test_mann_whitney_on_buckets_finds_a_shift_and_not_an_equal_draw() -> None:
    a, b = observed("a", seed=1), observed("b", seed=2)
    superiority, p = mann_whitney(a.latency_buckets, b.latency_buckets)
    assert 0.4 < superiority < 0.6 and p > 0.05
    slow = observed("s", latency=0.004, seed=3)
    superiority, p = mann_whitney(slow.latency_buckets, b.latency_buckets)
    assert superiority > 0.8 and p < 1e-6
    assert mann_whitney(b.latency_buckets, slow.latency_buckets)[1] > 0.99, "one-sided"
    assert mann_whitney((), b.latency_buckets) == (pytest.approx(math.nan, nan_ok=True), 1.0)


def test_shift_in_shifts_takes_out_what_the_controls_moved() -> None:
    effect, p = shift_in_shifts((30, 100), (10, 100), (20, 100), (0.1 * 100, 100))
    assert effect == pytest.approx(0.1)
    effect, p = shift_in_shifts((300, 1000), (300, 1000), (100, 1000), (100, 1000))
    assert effect == pytest.approx(0.0) and p == pytest.approx(1.0)
    effect, p = shift_in_shifts((400, 1000), (100, 1000), (100, 1000), (100, 1000))
    assert effect == pytest.approx(0.3) and p < 1e-9
    assert shift_in_shifts((1, 0), (1, 10), None, None)[1] == 1.0


def test_a_whole_plant_slowing_down_passes_where_the_own_history_rule_rolls_back() -> None:
    slow = {"latency": 0.02}  # every site ten times slower now: another workload on the edge server
    m, metrics = judged({s: slow for s in ("c1", "c2", "k1", "k2", "k3")})
    assert m.verdict == "pass", m.reason
    assert metrics["latency"].environment and 0.5 < metrics["latency"].effect < 2.0
    assert "the environment's" in m.reason
    changed, controls, earlier = fleet({s: slow for s in ("c1", "c2", "k1", "k2", "k3")})
    own = measure(changed, None, RULES, ABORT, own={s: earlier[s] for s in changed})
    assert own.verdict == "fail" and "p99 ratio" in own.reason, "today's rule blames the model"


def test_an_environment_shift_can_be_inconclusive_by_policy_never_a_rollback() -> None:
    slow = {"latency": 0.02}
    m, _ = judged({s: slow for s in ("c1", "c2", "k1", "k2", "k3")},
                  rules=RULES.model_copy(update={"on_environment_shift": "inconclusive"}))
    assert m.verdict == "inconclusive" and "waiting for calm" in m.reason


@pytest.mark.parametrize(("change", "metric"), [
    ({"latency": 0.01}, "latency"),
    ({"confidence": 0.72}, "confidence"),
    ({"positive": 0.2}, "positive rate"),  # +0.15 over the controls' 0.05
])
def test_a_change_only_the_changed_sites_show_is_the_models(change: dict, metric: str) -> None:
    m, metrics = judged({"c1": change, "c2": change})
    assert m.verdict == "fail" and metrics[metric].verdict == "fail", m.reason
    assert m.reason.startswith("2 changed site(s) against 3 control(s): " + metric)
    assert metrics[metric].p_value < alpha(RULES) and not metrics[metric].environment
    others = [j.verdict for j in m.metrics if j.metric != metric]
    assert others == ["pass", "pass"], m.reason


def test_a_site_that_always_differed_is_not_the_models_fault() -> None:
    """c1 and c2 were slower and flagged more before the wave too (another line, worn tools)."""
    unlike = {"latency": 0.006, "positive": 0.25}
    m, metrics = judged({"c1": unlike, "c2": unlike}, before={"c1": unlike, "c2": unlike})
    assert m.verdict == "pass", m.reason
    assert metrics["latency"].p_value < 1e-6, "they are slower than the controls now"
    assert abs(metrics["positive rate"].effect) < 0.06


def test_a_small_significant_difference_below_the_limit_passes() -> None:
    m, metrics = judged({"c1": {"latency": 0.0026}, "c2": {"latency": 0.0026}})
    assert metrics["latency"].p_value < alpha(RULES) and m.verdict == "pass", m.reason


def test_absolute_rules_fail_a_site_whatever_the_controls_do() -> None:
    m, _ = judged({"c1": {"errors": 20}})
    assert m.verdict == "fail" and "c1: error rate" in m.reason
    ceiling = RULES.model_copy(update={"max_p99_seconds": 0.01})
    m, _ = judged({s: {"latency": 0.02} for s in ("c1", "c2", "k1", "k2", "k3")}, rules=ceiling)
    assert m.verdict == "fail" and "the ceiling 10 ms" in m.reason


def test_too_little_traffic_or_no_controls() -> None:
    changed, controls, earlier = fleet({})
    quiet = {s: observed(s, n=10) for s in controls}
    assert measure_with_controls(changed, quiet, earlier, RULES, ABORT) is None, "no control with enough traffic"
    m = measure_with_controls({"c1": observed("c1", n=10), "c2": None}, controls, earlier, RULES, ABORT)
    assert m is not None and m.verdict == "inconclusive" and "no telemetry" in m.reason


def test_without_a_before_the_concurrent_comparison_alone_judges() -> None:
    changed, controls, _ = fleet({"c1": {"latency": 0.01}, "c2": {"latency": 0.01}})
    m = measure_with_controls(changed, controls, {}, RULES, ABORT)
    assert m is not None and m.verdict == "fail"
    latency = next(j for j in m.metrics if j.metric == "latency")
    assert math.isnan(latency.changed_before) and latency.effect > 3


def test_the_false_alarm_rate_holds_over_many_good_waves() -> None:
    """A hundred waves of a good model on a fleet whose load changes between windows: the share failed
    stays within the policy's false-alarm rate (with room for a 100-draw estimate)."""
    failed = 0
    for seed in range(100):
        load = 1 + 4 * (seed % 3 == 0)  # a third of the windows under a burst of load on every site
        m, _ = judged({s: {"latency": 0.002 * load} for s in ("c1", "c2", "k1", "k2", "k3")}, seed=seed * 7)
        failed += m.verdict == "fail"
    assert failed <= 2, f"{failed} of 100 good waves failed"


def test_pooled_windows_keep_the_confidence_histogram() -> None:
    pooled = combine([observed("a"), observed("b")])
    assert pooled is not None and pooled.confidence_buckets[-1][1] == 800


def test_the_rollout_artifact_and_cli_rows_show_why_a_wave_was_judged() -> None:
    from datetime import UTC, datetime

    from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord, judgement, report_markdown

    m, _ = judged({"c1": {"latency": 0.01}, "c2": {"latency": 0.01}})
    measured = {"at": "2026-01-01T00:00:05+00:00", "verdict": m.verdict, "reason": m.reason,
                "sites": [j.as_dict() for j in m.sites], "metrics": [j.as_dict() for j in m.metrics]}
    record = RolloutRecord(id="ro-x", model="m", version=2, from_version=1, status="rolled_back",
                           started_at=datetime(2026, 1, 1, tzinfo=UTC),
                           waves=[WaveRecord(index=0, name="canary", sites=["c1", "c2"], measurements=[measured])])
    rows = judgement(record)
    assert [(r["wave"], r["metric"], r["verdict"].split()[0]) for r in rows] == [
        ("canary", "latency", "fail"), ("canary", "confidence", "pass"), ("canary", "positive rate", "pass")]
    assert rows[0]["changed"].endswith(" ms") and "→" in rows[0]["controls"] and rows[0]["fails if"] == "> 2"
    text = report_markdown(record, None, {})
    assert "## How each wave was judged" in text
    assert f"| canary | latency | {rows[0]['changed']} | {rows[0]['controls']} | {rows[0]['effect']} | > 2 |" in text


def test_a_single_canary_is_not_failed_for_what_sites_traffic_does_on_its_own() -> None:
    """Seen in bench/judgement.py: a good retrain's canary flagged 0 of 100 rows where it had flagged 9 %,
    while the controls' rates moved by as much from site to site. The rate's test counts that movement;
    the same shift against controls that hold still is the model's."""
    changed = {"c1": observed("c1", n=150, positive=0.0, seed=2)}
    before = {"c1": observed("c1", n=150, positive=0.2, seed=1)}
    moving = {"k1": (0.02, 0.2), "k2": (0.2, 0.02), "k3": (0.05, 0.2), "k4": (0.2, 0.04)}
    controls = {s: observed(s, n=150, positive=now, seed=2) for s, (_, now) in moving.items()}
    before |= {s: observed(s, n=150, positive=then, seed=1) for s, (then, _) in moving.items()}
    m = measure_with_controls(changed, controls, before, RULES, ABORT)
    assert m is not None and m.verdict == "pass", m.reason
    steady = {s: observed(s, n=150, positive=0.08, seed=2) for s in moving}
    before |= {s: observed(s, n=150, positive=0.08, seed=1) for s in moving}
    m = measure_with_controls(changed, steady, before, RULES, ABORT)
    assert m is not None and m.verdict == "fail" and "positive rate" in m.reason, m.reason


def test_a_rate_of_zero_still_has_a_variance() -> None:
    _, p = shift_in_shifts((0, 100), (32, 400), (9, 100), (32, 400))
    assert 1e-4 < p < 0.05


def test_a_rollouts_headline_says_how_it_ended_and_why() -> None:
    from datetime import UTC, datetime

    from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord, headline

    m, _ = judged({"c1": {"latency": 0.01}, "c2": {"latency": 0.01}})
    failed = {"at": "2026-01-01T00:00:05+00:00", "verdict": "fail", "reason": m.reason,
              "sites": [j.as_dict() for j in m.sites], "metrics": [j.as_dict() for j in m.metrics]}
    waves = [WaveRecord(index=0, name="canary", sites=["c1"], status="advanced"),
             WaveRecord(index=1, name="rest", sites=["c2", "c3"], status="rolled_back", measurements=[failed],
                        reason=m.reason)]
    record = RolloutRecord(id="ro-x", model="m", version=4, from_version=3, status="rolled_back", waves=waves,
                           started_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert headline(record) == "rollout v4: rolled back at wave rest — latency"
    site_failed = {**failed, "metrics": [], "sites": [{"site": "c2", "verdict": "fail",
                                                       "reasons": ["p99 ratio 3.1 > 2 (p99 21 ms)"]}]}
    waves[1] = waves[1].model_copy(update={"measurements": [site_failed]})
    assert headline(record.model_copy(update={"waves": waves})).endswith("— p99")
    held = record.model_copy(update={"status": "held", "waves": [waves[0].model_copy(update={
        "status": "held", "reason": "3 inconclusive measurements (limit 3)"})]})
    assert headline(held) == "rollout v4: held at wave canary — 3 inconclusive measurements (limit 3)"
    done = record.model_copy(update={"status": "succeeded", "waves": waves[:1]})
    assert headline(done) == "rollout v4 → 1 site: succeeded"


def test_a_long_reason_goes_below_the_waves_table_not_into_a_cell() -> None:
    from datetime import UTC, datetime

    from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord, report_markdown, summary

    m, _ = judged({"c1": {"latency": 0.01}, "c2": {"latency": 0.01}})
    failed = {"at": "2026-01-01T00:00:05+00:00", "verdict": "fail", "reason": m.reason,
              "sites": [j.as_dict() for j in m.sites], "metrics": [j.as_dict() for j in m.metrics]}
    wave = WaveRecord(index=0, name="canary", sites=["c1", "c2"], status="rolled_back", decision="rollback",
                      reason=m.reason, measurements=[failed])
    record = RolloutRecord(id="ro-x", model="m", version=4, from_version=3, status="rolled_back", waves=[wave],
                           started_at=datetime(2026, 1, 1, tzinfo=UTC))
    assert len(m.reason) > 150 and summary(record)[0]["reason"] == "latency"
    text = report_markdown(record, None, {})
    assert "| 1/1 canary | 2 | rolled_back | rollback | latency |" in text
    assert f"- 1/1 canary: {m.reason}" in text and f"| {m.reason}" not in text


def test_a_persons_answer_at_the_manual_gate_decides_the_wave() -> None:
    from datetime import UTC, datetime

    from edgewave.tasks.rollout.record import RolloutRecord, WaveRecord, headline, with_approval

    at = datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    waves = [WaveRecord(index=0, name="canary", sites=["c1"], status="advanced", decision="advance", reason="passed"),
             WaveRecord(index=1, name="rest", sites=["c2"])]
    record = RolloutRecord(id="ro-x", model="m", version=4, from_version=3, waves=waves,
                           started_at=datetime(2026, 1, 1, tzinfo=UTC))
    approved = with_approval(record, 0, True, "line 1 looks fine", at)
    assert approved.waves[0].decision == "advance" and approved.waves[0].approval.reason == "line 1 looks fine"
    assert record.waves[0].approval is None, "the record given is not changed"
    rejected = with_approval(record, 0, False, "scrap rate up on line 1", at)
    assert (rejected.waves[0].decision, rejected.waves[0].reason) == ("rollback",
                                                                      "rejected at the manual gate: scrap rate up on line 1")
    ended = rejected.model_copy(update={"status": "rolled_back", "waves": [
        rejected.waves[0].model_copy(update={"status": "rolled_back"}), rejected.waves[1]]})
    assert headline(ended) == "rollout v4: rolled back at wave canary — rejected at the manual gate: scrap rate up on line 1"
    unanswered = with_approval(record, 0, None, "no answer within 60 s", at)
    assert (unanswered.waves[0].decision, unanswered.waves[0].status) == ("hold", "held")
    assert unanswered.waves[0].approval.approved is None
