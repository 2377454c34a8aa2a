"""The two tests a canary judgement rests on, computed from what sites export: histograms and
counters, not raw samples.

Pure functions, no SciPy: a site exports each request's latency only as a histogram bucket, so
a Mann–Whitney test on the buckets treats each bucket as one group of tied values, with the tie
correction of its variance; proportions come from counters. Both give up (p = 1: no evidence)
rather than divide by zero when a group is empty or every value is tied.
"""

from __future__ import annotations

import math

Buckets = tuple[tuple[float, float], ...]  # (upper bound, cumulative count), ascending, as Prometheus exports them


def counts(buckets: Buckets, bounds: list[float]) -> list[float]:
    """Per-bucket counts at `bounds` from cumulative buckets (a bound the histogram lacks holds nothing)."""
    cumulative = dict(buckets)
    out, previous, last = [], 0.0, 0.0
    for le in bounds:
        last = cumulative.get(le, last)
        out.append(max(0.0, last - previous))
        previous = max(previous, last)
    return out


def _upper_tail(z: float) -> float:
    return 0.5 * math.erfc(z / math.sqrt(2))


def mann_whitney(a: Buckets, b: Buckets) -> tuple[float, float]:
    """(P(a draw of `a` exceeds one of `b`, ties counted half), one-sided p-value for "`a` tends to
    be larger"): the U statistic with the normal approximation, tie-corrected and with continuity
    correction. NaN and p = 1 when either side is empty."""
    bounds = sorted({le for le, _ in a} | {le for le, _ in b})
    ca, cb = counts(a, bounds), counts(b, bounds)
    na, nb = sum(ca), sum(cb)
    if na <= 0 or nb <= 0:
        return math.nan, 1.0
    below, u = 0.0, 0.0
    for x, y in zip(ca, cb, strict=True):
        u += x * (below + y / 2)
        below += y
    n = na + nb
    ties = sum((x + y) ** 3 - (x + y) for x, y in zip(ca, cb, strict=True))
    variance = na * nb / 12 * ((n + 1) - ties / (n * (n - 1))) if n > 1 else 0.0
    superiority = u / (na * nb)
    if variance <= 0:
        return superiority, 1.0
    return superiority, _upper_tail((u - na * nb / 2 - 0.5) / math.sqrt(variance))


Proportion = tuple[float, float]  # (positives, trials)


def shift_in_shifts(changed_now: Proportion, controls_now: Proportion, changed_before: Proportion | None,
                    controls_before: Proportion | None, between_sites: float = 0.0) -> tuple[float, float]:
    """(difference in differences of two proportions, two-sided p-value of a z test): how much more the
    changed group's rate moved than the controls' did. Without a `before` on both sides, the plain
    difference now. NaN and p = 1 when a group has no trials.

    `between_sites`: variance the sampling of rows does not explain (a site's traffic changes over
    time: a worn tool, another product), added to the binomial one. Rates of 0 or 1 would claim no
    variance at all, so each rate's variance is taken with one success and one failure added
    (Agresti–Caffo)."""
    groups = [changed_now, controls_now] + ([changed_before, controls_before]
                                            if changed_before and controls_before else [])
    if any(n <= 0 for _, n in groups):
        return math.nan, 1.0
    rates = [k / n for k, n in groups]
    effect = rates[0] - rates[1] - (rates[2] - rates[3] if len(rates) == 4 else 0.0)
    variance = between_sites + sum((k + 1) / (n + 2) * (1 - (k + 1) / (n + 2)) / (n + 2) for k, n in groups)
    if variance <= 0:
        return effect, 1.0 if effect == 0 else 0.0
    return effect, 2 * _upper_tail(abs(effect) / math.sqrt(variance))
