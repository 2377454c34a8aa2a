from __future__ import annotations

import pytest

from edgewave.tasks.release.gate import judge


@pytest.mark.parametrize(("pr_auc", "passed"), [(0.51, True), (0.5, True), (0.49, False)])
def test_first_model_must_clear_the_floor(pr_auc: float, passed: bool) -> None:
    decision = judge(pr_auc, None, tolerance=0.02, floor=0.5)
    assert decision.passed is passed
    assert "first model" in decision.reason and decision.baseline_version is None


@pytest.mark.parametrize(("challenger", "passed", "wording"), [
    (0.90, True, "better by 0.1000"),
    (0.785, True, "worse by 0.0150, within the tolerance"),
    (0.779, False, "worse by 0.0210, beyond the tolerance"),
])
def test_challenger_may_lose_at_most_the_tolerance_to_the_baseline(challenger: float, passed: bool, wording: str) -> None:
    decision = judge(challenger, ("production", 4, 0.80), tolerance=0.02, floor=0.99)
    assert decision.passed is passed
    assert wording in decision.reason
    assert decision.baseline_version == 4 and decision.baseline_alias == "production"
    assert "v4 (@production)" in decision.reason


def test_decision_becomes_version_tags() -> None:
    tags = judge(0.7, ("staging", 1, 0.8), tolerance=0.02, floor=0.5).as_tags()
    assert tags["gate.passed"] == "False"
    assert tags["gate.baseline_version"] == "1"
    assert "beyond the tolerance" in tags["gate.reason"]


def test_a_versions_description_keeps_one_line_per_subject() -> None:
    from edgewave.tasks.release.registry import with_section

    gated = with_section("", "Gate", "PASSED → @staging: PR-AUC 0.91 ≥ v3's 0.90 - 0.02")
    assert gated == "**Gate**: PASSED → @staging: PR-AUC 0.91 ≥ v3's 0.90 - 0.02"
    first = with_section(gated, "Rollout", "rollout v4: rolled back at wave canary — positive rate (`ro-1`)")
    again = with_section(first, "Rollout", "rollout v4 → 6 sites: succeeded (`ro-2`)")
    assert again.split("\n\n") == ["**Gate**: PASSED → @staging: PR-AUC 0.91 ≥ v3's 0.90 - 0.02",
                                   "**Rollout**: rollout v4 → 6 sites: succeeded (`ro-2`)"]
