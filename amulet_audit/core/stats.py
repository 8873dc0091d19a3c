"""Confidence intervals: exact binomial (Clopper-Pearson) for rates, percentile bootstrap otherwise, and the
Bayesian bootstrap (Rubin 1981) for statistics whose threshold is itself estimated (TPR at a fixed FPR); the
membership advantage, a best over thresholds, corrects its lower end for that choice (`membership.advantage_interval`).

`tests/test_coverage.py` checks by simulation that each of them reaches its nominal coverage."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np

# How an interval was computed, as results.json records it (`ci_method`).
CI_BINOMIAL = "exact binomial (Clopper-Pearson)"
CI_BOOTSTRAP = "percentile bootstrap"
CI_STRATIFIED_BOOTSTRAP = "percentile bootstrap, members and non-members resampled apart"
CI_OPTIMISM_BOOTSTRAP = ("bootstrap, members and non-members resampled apart: upper end percentile, lower end the "
                         "estimate less the optimism of its chosen threshold (Efron 1983)")
CI_BAYESIAN_BOOTSTRAP = ("percentile Bayesian bootstrap (Rubin 1981), members and non-members reweighted apart, "
                         "the threshold re-estimated in each replicate")


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval for k successes out of n trials."""
    from scipy.stats import beta

    if n <= 0:
        return (0.0, 1.0)
    alpha = 1.0 - confidence
    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return (lo, hi)


def share(arrays: dict[str, np.ndarray]) -> float:
    """sum(hits) / sum(of): a rate over the records counted in `of` (0/1 per record); NaN when none is."""
    den = float(np.sum(arrays["of"]))
    return float(np.sum(arrays["hits"])) / den if den else float("nan")


def mean_of(arrays: dict[str, np.ndarray]) -> float:
    """The mean of the per-record values `x`."""
    return float(np.mean(arrays["x"]))


def paired_delta_ci(base, other, *, reps: int, seed: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of other - base, two measurements (`PairedSample`s) of the same statistic on the
    same records: every replicate draws one set of records and recomputes both on it, so what the two models share
    (which records are hard, which are outliers) cancels out of the difference. None when the samples do not cover
    the same records in the same order and strata (then the measurements cannot be paired; e.g. a fairness gap
    read on another attribute)."""
    values = paired_delta_replicates(base, other, reps=reps, seed=seed)
    return None if values is None else percentile_ci(values, confidence)


def paired_delta_replicates(base, other, *, reps: int, seed: int) -> np.ndarray | None:
    """The paired bootstrap replicates of other - base that `paired_delta_ci` takes its interval from (the same
    draws for the same seed; NaN replicates dropped), e.g. for a p-value of the change (`bootstrap_p_value`). None
    when the two samples cannot be paired, or when no replicate is finite."""
    if (base is None or other is None or _identity(base.statistic) != _identity(other.statistic)
            or not np.array_equal(base.records, other.records)
            or (base.strata is None) != (other.strata is None)
            or (base.strata is not None and not np.array_equal(base.strata, other.strata))):
        return None
    values = bootstrap_replicates(lambda idx: _statistic_at(other, idx) - _statistic_at(base, idx), len(base.records),
                                  reps=reps, seed=seed, strata=_strata(base))
    return values if len(values) else None


def bootstrap_p_value(values: np.ndarray, *, greater: bool) -> float:
    """One-sided percentile-bootstrap p-value that a change is above zero (`greater`) or below it, from its
    bootstrap replicates: the share of replicates that are not (ties at zero count against the change). It is
    below alpha exactly where the one-sided percentile bound at level 1 - alpha excludes zero, so a row's p-value
    and its interval agree; 0 means no replicate fell on the other side (p < 1/replicates)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan")
    return float(np.mean(values <= 0 if greater else values >= 0))


def normal_p_value(delta: float, ci: Sequence[float], confidence: float, *, greater: bool) -> float:
    """One-sided p-value that a change is above zero (`greater`) or below it, from its point and a symmetric
    normal-approximation interval at `confidence` (standard error: half-width / z)."""
    from scipy.stats import norm

    se = (ci[1] - ci[0]) / (2 * float(norm.ppf(0.5 + confidence / 2)))
    signed = delta if greater else -delta
    if not se > 0:
        return 0.0 if signed > 0 else 1.0
    return float(norm.sf(signed / se))


def benjamini_hochberg(p_values: Sequence[float]) -> list[float]:
    """Benjamini-Hochberg adjusted p-values (in the input order): p_(i) * m / i, made monotone from the largest
    down and capped at 1. Rejecting every hypothesis whose adjusted value is <= q controls the false discovery
    rate at q (independent or positively dependent tests; Benjamini & Hochberg 1995)."""
    p = np.asarray(p_values, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = p[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out = np.empty(m)
    out[order] = adjusted
    return [float(x) for x in out]


def sample_ci(sample, *, reps: int, seed: int, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of a `PairedSample`'s statistic over its own records, each stratum resampled
    on its own (strata in the sorted order of their labels)."""
    return bootstrap_ci(lambda idx: _statistic_at(sample, idx), len(sample.records), reps=reps, seed=seed,
                        confidence=confidence, strata=_strata(sample))


def _statistic_at(sample, idx: np.ndarray) -> float:
    return sample.statistic({k: v[idx] for k, v in sample.arrays.items()})


def _strata(sample) -> list[np.ndarray] | None:
    if sample.strata is None:
        return None
    return [np.flatnonzero(sample.strata == s) for s in np.unique(sample.strata)]


def _identity(statistic) -> object:
    # partials compare by identity, and a sample that crossed a process boundary holds a new one
    if isinstance(statistic, functools.partial):
        return (statistic.func, statistic.args, tuple(sorted(statistic.keywords.items())))
    return statistic


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
    values = bootstrap_replicates(statistic, n, reps=reps, seed=seed, strata=strata)
    return percentile_ci(values, confidence) if len(values) else (float("nan"), float("nan"))


def bootstrap_replicates(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    reps: int,
    seed: int,
    strata: Sequence[np.ndarray] | None = None,
) -> np.ndarray:
    """The finite bootstrap replicates of `statistic(indices)` behind `bootstrap_ci` (same draws for the same seed)."""
    values = np.array([statistic(idx) for idx in _draws(n, reps, seed, strata)], dtype=float).reshape(reps)
    return values[np.isfinite(values)]


def bootstrap_indices(n: int, *, reps: int, seed: int, strata: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """The record indices (reps, n) that `bootstrap_replicates` (and so `bootstrap_ci`, `sample_ci`,
    `paired_delta_ci`) draws for the same arguments, row r being replicate r: for computing the replicates of a
    statistic vectorised over all of them at once (memory reps * n integers)."""
    return np.stack(list(_draws(n, reps, seed, strata))) if reps else np.empty((0, n), dtype=np.int64)


def bootstrap_counts(n: int, *, reps: int, seed: int, strata: Sequence[np.ndarray] | None = None,
                     rows: int | None = None):
    """The draws of `bootstrap_indices` as record counts, in chunks of `rows` replicates (default: ~1M counts a
    chunk): yields float arrays (rows, n), count[r, i] = how often replicate r drew record i."""
    rows = rows or max(1, (1 << 20) // max(n, 1))
    draws = _draws(n, reps, seed, strata)
    for start in range(0, reps, rows):
        idx = np.stack([next(draws) for _ in range(min(rows, reps - start))])
        k = len(idx)
        yield np.bincount((idx + n * np.arange(k)[:, None]).ravel(), minlength=k * n).reshape(k, n).astype(float)


def _draws(n: int, reps: int, seed: int, strata: Sequence[np.ndarray] | None):
    rng = np.random.default_rng(seed)
    for _ in range(reps):
        if strata is None:
            yield rng.integers(0, n, n)
        else:
            yield np.concatenate([s[rng.integers(0, len(s), len(s))] for s in strata])


def bayesian_bootstrap_replicates(
    statistic: Callable[[np.ndarray], np.ndarray],
    strata: Sequence[np.ndarray],
    n: int,
    *,
    reps: int,
    seed: int,
) -> np.ndarray:
    """Bayesian bootstrap replicates (Rubin, "The Bayesian Bootstrap", Ann. Statist. 1981) of a weighted
    statistic: in each replicate every stratum (arrays of record indices out of 0..n-1, together covering them
    all) gets flat-Dirichlet weights scaled to sum to its size, so a record's weight has mean 1, like its count in
    a resample of the stratum at its own size, but varies continuously. `statistic(weights)` maps weights
    (rows, n) to values (rows,) or (rows, k) (several statistics from the same weights); it is called on chunks
    of at most ~1M weights. Returns the replicates whose values are all finite, (reps,) or (reps, k).

    Unlike multinomial resampling, continuous weights move an estimated threshold (e.g. the score with a 1%
    weighted false-positive rate) by less than a record, so the replicates spread around the population value
    rather than around the sample's discretised one; `tests/test_coverage.py` shows the difference in coverage."""
    rng = np.random.default_rng(seed)
    rows = max(1, (1 << 20) // max(n, 1))
    out = []
    for start in range(0, reps, rows):
        r = min(rows, reps - start)
        weights = np.empty((r, n))
        for s in strata:
            g = rng.standard_exponential((r, len(s)))  # Dirichlet(1, ..., 1) = normalised exponentials
            weights[:, s] = g * (len(s) / g.sum(axis=1, keepdims=True))
        v = np.asarray(statistic(weights), dtype=float)
        out.append(v.reshape(r, *v.shape[1:]))
    values = np.concatenate(out) if out else np.empty(0)
    return values[np.isfinite(values) if values.ndim == 1 else np.isfinite(values).all(axis=1)]


def percentile_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates."""
    alpha = 1.0 - confidence
    return (float(np.quantile(values, alpha / 2)), float(np.quantile(values, 1 - alpha / 2)))
