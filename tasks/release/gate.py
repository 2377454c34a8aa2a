"""The quality gate: may a challenger go to @staging? Pure logic, no registry access."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reason: str
    challenger_pr_auc: float
    baseline_version: int | None = None
    baseline_alias: str | None = None
    baseline_pr_auc: float | None = None

    def as_tags(self) -> dict[str, str]:
        return {f"gate.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}


def judge(challenger_pr_auc: float, baseline: tuple[str, int, float] | None, tolerance: float,
          floor: float) -> GateDecision:
    """Compare on the same held-out data; with no baseline the absolute floor applies.

    Args:
        challenger_pr_auc: PR-AUC of the new version on this release's held-out split.
        baseline: (alias, version, PR-AUC on the same split) of the current baseline, if any.
        tolerance: how much PR-AUC the challenger may lose to the baseline.
        floor: PR-AUC the first model must reach.
    """
    if baseline is None:
        passed = challenger_pr_auc >= floor
        verdict = "clears" if passed else "misses"
        return GateDecision(passed, f"first model: PR-AUC {challenger_pr_auc:.4f} {verdict} the floor {floor:.4f}",
                            challenger_pr_auc)
    alias, version, base = baseline
    passed = challenger_pr_auc >= base - tolerance
    loss = base - challenger_pr_auc
    if loss <= 0:
        verdict = f"better by {-loss:.4f}"
    else:
        verdict = f"worse by {loss:.4f}, {'within' if passed else 'beyond'} the tolerance {tolerance:.4f}"
    reason = f"PR-AUC {challenger_pr_auc:.4f} vs {base:.4f} of v{version} (@{alias}) on the same held-out data: {verdict}"
    return GateDecision(passed, reason, challenger_pr_auc, version, alias, base)
