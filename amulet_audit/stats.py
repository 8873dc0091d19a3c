"""Confidence intervals: exact binomial (Clopper-Pearson) for rates, percentile bootstrap otherwise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval for k successes out of n trials."""
    from scipy.stats import beta

    if n <= 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    reps: int,
    seed: int,
    confidence: float = 0.95,
    strata: Sequence[np.ndarray] | None = None,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic(indices)` over records 0..n-1.

    With `strata` (arrays of record indices), each stratum is resampled on its own, keeping its size
    (e.g. members and non-members for AUC). NaN replicates (a group emptied by resampling) are dropped.
    """
    rng = np.random.default_rng(seed)
    values = np.empty(reps)
    for r in range(reps):
        if strata is None:
            idx = rng.integers(0, n, n)
        else:
            idx = np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])
        values[r] = statistic(idx)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (float("nan"), float("nan"))
    alpha = 1.0 - confidence
    return (float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2)))
