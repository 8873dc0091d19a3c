"""Membership inference, every attack measured identically (ROC over every threshold, TPR at low FPR as in
Carlini et al., S&P 2022):

- `loss`: a threshold on per-example loss (Yeom et al., CSF 2018);
- `lira`: the Likelihood Ratio Attack (Carlini et al., "Membership Inference Attacks From First Principles",
  S&P 2022), online (IN and OUT reference models) or offline (OUT only);
- `rmia`: the Robust Membership Inference Attack (Zarifzadeh et al., "Low-Cost High-Power Membership Inference
  Attacks", ICML 2024), pairwise likelihood ratios against population records.

LiRA and RMIA train reference models (re-initialised copies of the audited architecture, the data spec's
recipe) on random halves of the attacked records (`amulet_audit.training.reference`)."""

from __future__ import annotations

from functools import partial
from numbers import Integral, Real

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec, PairedSample
from amulet_audit.ops.forward import cross_entropy, logits
from amulet_audit.core.params import Boolean, Interval, OptionalOf, Options
from amulet_audit.core.stats import (CI_BAYESIAN_BOOTSTRAP, CI_OPTIMISM_BOOTSTRAP, CI_STRATIFIED_BOOTSTRAP,
                                     bayesian_bootstrap_replicates, bootstrap_counts, percentile_ci, sample_ci)

AUC = MetricSpec("auc", "Area under the membership ROC curve; 0.5 is chance.", higher_is_worse=True, unit="auc")
TPR_AT_FPR_001 = MetricSpec(
    "tpr_at_fpr_0.01", "Members identified at a 1% false-positive rate.", higher_is_worse=True, unit="fraction",
    min_n=100, min_n_of="non-members",
)
TPR_AT_FPR_0001 = MetricSpec(
    "tpr_at_fpr_0.001", "Members identified at a 0.1% false-positive rate.", higher_is_worse=True, unit="fraction",
    min_n=1000, min_n_of="non-members",
)
ADVANTAGE = MetricSpec("advantage", "Membership advantage max(TPR - FPR) (Yeom et al. 2018).", higher_is_worse=True,
                      unit="difference")


def roc_points(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(fpr, tpr) of the ROC curve of `scores` (higher = member), exactly as scikit-learn's `roc_curve` gives them
    (one point per distinct score, collinear points dropped, (0, 0) first), without its input validation, which
    dominates the cost of the thousands of bootstrap replicates an audit computes."""
    y = np.asarray(is_member).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last record of each distinct score
    tps = np.cumsum(y, dtype=np.float64)[last]
    fps = 1 + last - tps
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps = fps[keep], tps[keep]
    tps, fps = np.r_[0, tps], np.r_[0, fps]
    with np.errstate(divide="ignore", invalid="ignore"):  # NaN without members or non-members, as scikit-learn
        return fps / fps[-1], tps / tps[-1]


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR reachable with FPR at most `target`."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def tpr_at_fpr_weighted(scores: np.ndarray, is_member: np.ndarray, weights: np.ndarray, target: float) -> np.ndarray:
    """`tpr_at_fpr` of the weighted ROC curve, for many weightings of the same records at once.

    `scores`, `is_member`: (n,); `weights`: (rows, n), non-negative (a record's count in a resample, or its
    Bayesian-bootstrap weight). Row r's value is the highest weighted TPR over the thresholds (the distinct scores)
    whose weighted FPR is at most `target`. With count weights and distinct scores it equals `tpr_statistic` of the
    resampled records exactly; with continuous weights, scikit-learn's `roc_curve(..., sample_weight=w)` read by
    `tpr_at_fpr` (tests/test_membership_roc.py). Returns (rows,)."""
    y = np.asarray(is_member).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(s, kind="mergesort")[::-1]
    last = np.r_[np.flatnonzero(np.diff(s[order])), len(s) - 1]  # the last record of each distinct score
    w, y = w[:, order], y[order]
    tps = np.cumsum(w * y, axis=1)[:, last]
    fps = np.cumsum(w, axis=1)[:, last] - tps
    with np.errstate(divide="ignore", invalid="ignore"):
        fpr, tpr = fps / fps[:, -1:], tps / tps[:, -1:]
    k = np.sum(fpr <= target + 1e-12, axis=1)  # both rise along the thresholds: the best is the last one allowed
    return np.where(k > 0, tpr[np.arange(len(w)), np.maximum(k - 1, 0)], 0.0)


def threshold_bounded_from(target: float, confidence: float) -> int:
    """The fewest non-members with which the threshold at FPR `target` can be bounded from above at `confidence`:
    the number of non-members scoring above the population threshold is Binomial(n, target), and while
    (1 - target)^n > (1 - confidence) / 2 none may lie above it (no order statistic bounds it), so no TPR above 0
    is a valid lower confidence bound, whatever the score distributions. 368 at 1% FPR, 3,688 at 0.1% (95%);
    below it `tpr_at_fpr_interval` starts at 0."""
    return int(np.ceil(np.log((1.0 - confidence) / 2) / np.log1p(-target) - 1e-9))


def tpr_at_fpr_interval(scores: np.ndarray, is_member: np.ndarray, target: float, *, reps: int, seed: int,
                        confidence: float) -> tuple[float, tuple[float, float], str]:
    """TPR at FPR <= `target` (a fraction of the members; `tpr_at_fpr`), its interval at `confidence`, and how
    the interval was computed (`ci_method`). `scores`, `is_member`: (n,).

    The threshold is estimated from the non-members, so both samples vary: percentiles of `reps` Bayesian-bootstrap
    replicates (Rubin 1981; `stats.bayesian_bootstrap_replicates`), members and non-members reweighted apart, the
    threshold re-estimated in each replicate. Ordinary resampling moves the threshold by whole records and misses
    its coverage with few non-members above the threshold (tests/test_coverage.py, benchmarks/coverage.py).

    Each sample gets one more record, placed to lower the TPR for the lower end (a member below every score, a
    non-member above every score) and to raise it for the upper end (the reverse), as Clopper-Pearson does for a
    rate: on k of n members above a known threshold the replicates are Beta(k, n - k + 1) and Beta(k + 1, n - k),
    whose percentiles are its limits (the plain Bayesian bootstrap's Beta(k, n - k) under-covers few members
    above the threshold; k = 0 gives an empty interval); on the non-members the extra record places the threshold
    at the upper or lower end of the gap between the two non-members it lies between (without it, the lower end is
    too high: the estimate is biased upwards, and 0.1% FPR of 4,000 covered 91%). With fewer non-members than
    `threshold_bounded_from(target, confidence)` the lower end is 0; the interval is extended to the point estimate
    where the percentiles exclude it."""
    member = np.asarray(is_member).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    value = tpr_at_fpr(*roc_points(s, member), target)
    n, n_out = len(s), int((~member).sum())
    strata = [np.r_[np.flatnonzero(member), n], np.r_[np.flatnonzero(~member), n + 1]]  # n, n + 1: the extra two
    ends = bayesian_bootstrap_replicates(partial(_tpr_ends, s, member, target), strata, n + 2, reps=reps, seed=seed)
    if not len(ends):
        return value, (float("nan"), float("nan")), CI_BAYESIAN_BOOTSTRAP
    lo, hi = percentile_ci(ends[:, 0], confidence)[0], percentile_ci(ends[:, 1], confidence)[1]
    method = CI_BAYESIAN_BOOTSTRAP + ", one more member and non-member on the side of each end"
    if n_out < (need := threshold_bounded_from(target, confidence)):
        lo = 0.0
        method += f"; lower end 0, as fewer than {need:,} non-members cannot bound the threshold from above"
    if value < lo or value > hi:
        lo, hi = min(lo, value), max(hi, value)
        method += "; extended to the point estimate"
    return value, (lo, hi), method


def _tpr_ends(scores: np.ndarray, member: np.ndarray, target: float, weights: np.ndarray) -> np.ndarray:
    """(rows, 2): the weighted TPR at FPR <= target with the extra member (weights[:, -2]) below every score and the
    extra non-member (weights[:, -1]) above every score, then the reverse; as `tpr_at_fpr_weighted` of the records
    with scores -inf / +inf for the two (tests/test_membership_roc.py)."""
    order = np.argsort(scores, kind="mergesort")[::-1]
    last = np.r_[np.flatnonzero(np.diff(scores[order])), len(scores) - 1]
    w, y = weights[:, :-2][:, order], member[order]
    extra_in, extra_out = weights[:, -2:-1], weights[:, -1:]
    tps = np.cumsum(w * y, axis=1)[:, last]
    fps = np.cumsum(w, axis=1)[:, last] - tps
    with np.errstate(divide="ignore", invalid="ignore"):
        members, non_members = tps[:, -1:] + extra_in, fps[:, -1:] + extra_out
        lower = _best_tpr(tps / members, (fps + extra_out) / non_members, target, 0.0)
        upper = _best_tpr((tps + extra_in) / members, fps / non_members, target, (extra_in / members)[:, 0])
    return np.stack([lower, upper], axis=1)


def _best_tpr(tpr: np.ndarray, fpr: np.ndarray, target: float, start: np.ndarray | float) -> np.ndarray:
    """The highest TPR (rows, thresholds, both rising) at FPR <= target; `start` where no threshold qualifies."""
    k = np.sum(fpr <= target + 1e-12, axis=1)
    return np.where(k > 0, tpr[np.arange(len(tpr)), np.maximum(k - 1, 0)], start)


def advantage_curves(scores: np.ndarray, is_member: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """TPR - FPR of the weighted ROC at every threshold (the distinct scores, highest first), for many weightings
    of the same records at once: `scores`, `is_member` (n,), `weights` (rows, n) -> (rows, thresholds). Its row
    maximum is `advantage_statistic` of the weighted records (exactly, with count weights: tests/test_coverage.py)."""
    y = np.asarray(is_member).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(s, kind="mergesort")[::-1]
    last = np.r_[np.flatnonzero(np.diff(s[order])), len(s) - 1]
    w, y = w[:, order], y[order]
    tps = np.cumsum(w * y, axis=1)[:, last]
    fps = np.cumsum(w, axis=1)[:, last] - tps
    with np.errstate(divide="ignore", invalid="ignore"):
        return tps / tps[:, -1:] - fps / fps[:, -1:]


def advantage_interval(scores: np.ndarray, is_member: np.ndarray, *, reps: int, seed: int,
                       confidence: float) -> tuple[float, tuple[float, float], str]:
    """Membership advantage max(TPR - FPR) (`advantage_statistic`), its interval at `confidence`, and how the
    interval was computed. `scores`, `is_member`: (n,).

    The estimate takes the best of many thresholds, so it is biased upwards (most when there is little to find: with
    no leak at all the percentile interval of its bootstrap covers the true 0 in 6% of samples; tests/test_coverage.py).
    Members and non-members are resampled apart (`reps` draws, as `sample_ci` with `seed` draws them). Upper end: the
    percentile of the replicates (biased upwards too, so on the safe side). Lower end: the true advantage is at least
    the true TPR - FPR at the estimate's chosen threshold, which falls short of the estimate by that choice's
    optimism (Efron, "Estimating the error rate of a prediction rule", JASA 1983); its distribution is estimated by
    the replicates' own (a replicate's best TPR - FPR less the sample's TPR - FPR at the replicate's threshold), and
    the lower end is the estimate less its upper (1 + confidence) / 2 quantile, at least 0."""
    member = np.asarray(is_member).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    value = advantage_statistic({"score": s, "member": member})
    curve = advantage_curves(s, member, np.ones(len(s)))[0]
    best, optimism = [], []
    for c in bootstrap_counts(len(s), reps=reps, seed=seed, strata=[np.flatnonzero(member), np.flatnonzero(~member)]):
        curves = advantage_curves(s, member, c)
        j = np.argmax(curves, axis=1)
        best.append(curves[np.arange(len(c)), j])
        optimism.append(best[-1] - curve[j])
    best, optimism = np.concatenate(best), np.concatenate(optimism)
    keep = np.isfinite(best) & np.isfinite(optimism)
    if not keep.any():
        return value, (float("nan"), float("nan")), CI_OPTIMISM_BOOTSTRAP
    hi = percentile_ci(best[keep], confidence)[1]
    lo = max(0.0, value - float(np.quantile(optimism[keep], (1 + confidence) / 2)))
    method = CI_OPTIMISM_BOOTSTRAP
    if value > hi:
        hi, method = value, method + "; extended to the point estimate"
    return value, (lo, hi), method


def auc_statistic(sample: dict[str, np.ndarray]) -> float:
    """ROC AUC of the scores in a membership sample ({"score", "member"} arrays): the trapezoidal area under
    `roc_points`, as scikit-learn's `roc_auc_score`."""
    member = np.asarray(sample["member"]).astype(bool)
    if member.all() or not member.any():
        raise ValueError("Only one class present in y_true. ROC AUC score is not defined in that case.")
    fpr, tpr = roc_points(sample["score"], member)
    return float(np.trapezoid(tpr, fpr))


def advantage_statistic(sample: dict[str, np.ndarray]) -> float:
    """Membership advantage max(TPR - FPR) (Yeom et al., CSF 2018) of a membership sample."""
    fpr, tpr = roc_points(sample["score"], sample["member"])
    return float(np.max(tpr - fpr))


def tpr_statistic(sample: dict[str, np.ndarray], target: float) -> float:
    """TPR at FPR <= `target` of a membership sample."""
    return tpr_at_fpr(*roc_points(sample["score"], sample["member"]), target)


def membership_metrics(scores: np.ndarray, is_member: np.ndarray, records: np.ndarray, *, reps: int, seed: int,
                       confidence: float) -> tuple[dict, dict]:
    """Every membership metric, with intervals, from attack scores (higher = more likely a member) of the records
    named by `records` (see `member_records`).

    Shared by all membership attacks so they are measured identically."""
    is_member = is_member.astype(bool)
    n_in, n_out = int(is_member.sum()), int((~is_member).sum())
    fpr, tpr = roc_points(scores, is_member)
    sample = {"score": np.asarray(scores, dtype=np.float64), "member": is_member}
    strata = (~is_member).astype(np.int64)  # resampled apart: stratum 0 the members, 1 the non-members

    def measured(statistic, value: float, offset: int) -> Measurement:
        paired = PairedSample(records, sample, statistic, strata)
        return Measurement(value, sample_ci(paired, reps=reps, seed=seed + offset, confidence=confidence), n_in + n_out,
                           paired=paired, ci_method=CI_STRATIFIED_BOOTSTRAP)

    out = {"auc": measured(auc_statistic, auc_statistic(sample), 0)}
    value, ci, method = advantage_interval(scores, is_member, reps=reps, seed=seed + 1, confidence=confidence)
    out["advantage"] = Measurement(value, ci, n_in + n_out, paired=PairedSample(records, sample, advantage_statistic,
                                                                                strata), ci_method=method)
    for offset, (spec, target) in enumerate(((TPR_AT_FPR_001, 0.01), (TPR_AT_FPR_0001, 0.001)), 2):
        value, ci, method = tpr_at_fpr_interval(scores, is_member, target, reps=reps, seed=seed + offset,
                                                confidence=confidence)
        need = spec.min_n
        reason = "" if n_out >= need else (
            f"TPR at {target:.1%} FPR needs at least {need:,} non-members to be estimated; only {n_out:,} were available"
        )
        out[spec.name] = Measurement(value, ci, n_in + n_out, reason,
                                     paired=PairedSample(records, sample, partial(tpr_statistic, target=target), strata),
                                     ci_method=method)
    details = {"roc": _downsample_roc(fpr, tpr), "n_members": n_in, "n_nonmembers": n_out, "auc": out["auc"].value}
    return out, details


def member_records(ctx: AttackContext, i_in: np.ndarray, i_out: np.ndarray) -> np.ndarray:
    """Names for the attacked records, members first: training-split indices, then holdout indices offset by the
    training split's size, so a member and a non-member never share a name."""
    return np.concatenate([i_in, len(ctx.data.x_train) + i_out])


def _downsample_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = 300) -> dict:
    """Keep the ROC's shape on a log FPR axis with a bounded number of points."""
    if len(fpr) <= points:
        return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    grid = np.unique(np.concatenate([[0.0], np.logspace(-5, 0, points - 1)]))
    pos = np.searchsorted(fpr, grid, side="right") - 1
    pos = np.unique(np.clip(pos, 0, len(fpr) - 1))
    return {"fpr": fpr[pos].tolist(), "tpr": tpr[pos].tolist()}


def balanced_indices(ctx: AttackContext, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (sorted) of equally many members in `data.x_train` and non-members in `data.x_holdout`, up to
    `limit` (default: the profile's budget) each; the records `balanced_sample` returns."""
    data = ctx.data
    rng = np.random.default_rng(ctx.seed)
    m = min(len(data.x_train), len(data.x_holdout), limit or ctx.profile.mia_samples)
    i_in = np.sort(rng.choice(len(data.x_train), m, replace=False))
    i_out = np.sort(rng.choice(len(data.x_holdout), m, replace=False))
    return i_in, i_out


def balanced_sample(ctx: AttackContext, limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal numbers of members (train) and non-members (holdout), up to the profile's budget.
    Returns (x, y, is_member)."""
    data = ctx.data
    i_in, i_out = balanced_indices(ctx, limit)
    m = len(i_in)
    x = np.concatenate([data.x_train[i_in], data.x_holdout[i_out]])
    y = np.concatenate([data.y_train[i_in], data.y_holdout[i_out]])
    return x, y, np.concatenate([np.ones(m, bool), np.zeros(m, bool)])


class LossAttack(Attack):
    """Score each record by its negative cross-entropy loss under the audited model; members have lower loss."""

    name = "loss"
    risk = "membership_inference"
    metrics = ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage")
    needs = frozenset({"scores"})
    defaults = {"samples": None}
    parameter_constraints = {"samples": OptionalOf(Interval(Integral, 10, None))}

    def _run(self, ctx: AttackContext) -> AttackResult:
        samples = self.get_params()["samples"]
        x, y, is_member = balanced_sample(ctx, samples)
        scores = -cross_entropy(logits(ctx.model.module, x), y)
        i_in, i_out = balanced_indices(ctx, samples)
        metrics, details = membership_metrics(scores, is_member, member_records(ctx, i_in, i_out),
                                              reps=ctx.profile.bootstrap_reps, seed=ctx.seed, confidence=ctx.confidence)
        details["most_exposed"] = most_exposed(scores, i_in, i_out)
        return AttackResult(metrics, details)


# --- reference-model attacks ------------------------------------------------------------------

EXPOSED = 10  # records listed as most exposed in the evidence


def most_exposed(scores: np.ndarray, i_in: np.ndarray, i_out: np.ndarray, top: int = EXPOSED) -> list[dict]:
    """The `top` highest-scoring records of a balanced sample (members `i_in` first, then non-members `i_out`),
    as {split, row, score}: the split ("train" or "holdout") and row index in it; never feature values."""
    order = np.argsort(-scores, kind="stable")[:top]
    m = len(i_in)
    return [{"split": "train" if j < m else "holdout", "row": int(i_in[j] if j < m else i_out[j - m]),
             "score": round(float(scores[j]), 6)} for j in order]


def logit_confidence(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """LiRA's logit-scaled confidence log(p_y / (1 - p_y)) of the true class y (Carlini et al. 2022, Sec. IV-B),
    computed stably from logits `z` (..., n, classes) as z_y - logsumexp_{j != y} z_j."""
    z = np.asarray(z, dtype=np.float64)
    idx = np.broadcast_to(y, z.shape[:-1])[..., None]
    zy = np.take_along_axis(z, idx, axis=-1)[..., 0]
    others = z.copy()
    np.put_along_axis(others, idx, -np.inf, axis=-1)
    peak = others.max(axis=-1)
    lse = peak + np.log(np.exp(others - peak[..., None]).sum(axis=-1))
    return zy - lse


def true_class_probability(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Softmax probability Pr(y | x, model) of the true class, from logits `z` (..., n, classes)."""
    z = np.asarray(z, dtype=np.float64)
    idx = np.broadcast_to(y, z.shape[:-1])[..., None]
    peak = z.max(axis=-1, keepdims=True)
    logp = z - peak - np.log(np.exp(z - peak).sum(axis=-1, keepdims=True))
    return np.exp(np.take_along_axis(logp, idx, axis=-1)[..., 0])


def lira_scores(target: np.ndarray, reference: np.ndarray, masks: np.ndarray, *, online: bool, variance: str) -> np.ndarray:
    """LiRA membership scores (Carlini et al. 2022, Algorithm 1) from logit-scaled confidences.

    `target` (n,) is the audited model's confidence on each record; `reference` (K, n) the reference models';
    `masks` (K, n) which reference models trained on which record. Gaussians are fitted to each record's IN and
    OUT confidences, with a per-record variance or one variance pooled over all records ("global", advised
    with fewer than ~64 reference models). Online: log N(target; mu_in, s_in) - log N(target; mu_out, s_out).
    Offline: the one-sided test -log Pr[Z > target], Z ~ N(mu_out, s_out). Higher = more likely a member."""
    from scipy.stats import norm

    masks = np.asarray(masks, dtype=bool)
    mu_out, sd_out = _gaussian(reference, ~masks, variance)
    if not online:
        return -norm.logsf(target, loc=mu_out, scale=sd_out)
    mu_in, sd_in = _gaussian(reference, masks, variance)
    return norm.logpdf(target, loc=mu_in, scale=sd_in) - norm.logpdf(target, loc=mu_out, scale=sd_out)


def _gaussian(values: np.ndarray, selected: np.ndarray, variance: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-record mean and standard deviation of `values` (K, n) over the models `selected` (K, n) for each."""
    count = selected.sum(axis=0)
    if (count == 0).any():
        raise ValueError("every record needs at least one reference model on each side it is compared with")
    mean = np.where(selected, values, 0.0).sum(axis=0) / count
    sq = np.where(selected, (values - mean) ** 2, 0.0)
    dof = count - 1
    pooled = sq.sum() / max(int(dof.sum()), 1)  # within-record variance pooled over every record
    if variance == "global":
        var = np.full(values.shape[1], pooled)
    else:
        var = np.where(dof > 0, sq.sum(axis=0) / np.maximum(dof, 1), pooled)
    return mean, np.sqrt(np.maximum(var, 1e-8))


def rmia_scores(target_x: np.ndarray, ref_x: np.ndarray, in_x: np.ndarray, target_z: np.ndarray, ref_z: np.ndarray,
                in_z: np.ndarray, *, online: bool, a: float, gamma: float) -> np.ndarray:
    """RMIA scores (Zarifzadeh et al. 2024, Eq. 4-5): for each record x, the fraction of population records z with
    LR(x, z) = [Pr(x|target) / Pr(x)] / [Pr(z|target) / Pr(z)] >= gamma.

    Inputs are true-class probabilities: `target_*` (n,) under the audited model, `ref_*` (K, n) under the
    reference models, `in_*` (K, n) whether each reference model trained on the record. Pr(r), the record's
    probability averaged over models trained with and without it, is 1/2 (mean IN + mean OUT) where a record has
    both (online); from OUT models alone it is approximated by 1/2 ((1 + a) mean OUT + (1 - a)) (offline, Sec. 3)."""
    pr_x = _marginal(ref_x, in_x, online=online, a=a)
    pr_z = _marginal(ref_z, in_z, online=online, a=a)
    ratio_x = target_x / pr_x
    ratio_z = np.sort(target_z / pr_z)
    # LR(x, z) >= gamma  <=>  ratio_z <= ratio_x / gamma
    return np.searchsorted(ratio_z, ratio_x / gamma, side="right") / len(ratio_z)


def _marginal(ref: np.ndarray, is_in: np.ndarray, *, online: bool, a: float) -> np.ndarray:
    out = ~is_in
    n_out, n_in = out.sum(axis=0), is_in.sum(axis=0)
    if (n_out == 0).any():
        raise ValueError("every record needs at least one reference model that did not train on it")
    mean_out = np.where(out, ref, 0.0).sum(axis=0) / n_out
    offline = 0.5 * ((1.0 + a) * mean_out + (1.0 - a))
    if not online:
        return np.maximum(offline, 1e-30)
    mean_in = np.where(is_in, ref, 0.0).sum(axis=0) / np.maximum(n_in, 1)
    return np.maximum(np.where(n_in > 0, 0.5 * (mean_in + mean_out), offline), 1e-30)


def _reference_copies(attack, profile) -> tuple:
    """What LiRA and RMIA train first (`Attack.copies`): the reference models of `_reference_pool` for the
    attack's `samples` and number of reference models at `profile`; the two attacks share them where these agree."""
    p = attack.get_params()
    return ("reference_models", p["samples"], p["n_reference"] or attack.budget(profile, "n_reference"))


def _reference_pool(ctx: AttackContext, samples: int | None, n_reference: int):
    """The attacked records (a balanced sample: members, then non-members), and reference models trained on
    random halves of them (complementary pairs, so each record is IN for n_reference // 2 models)."""
    from amulet_audit.training.reference import half_masks, train_reference_models

    data = ctx.data
    i_in, i_out = balanced_indices(ctx, samples)
    x = np.concatenate([data.x_train[i_in], data.x_holdout[i_out]])
    y = np.concatenate([data.y_train[i_in], data.y_holdout[i_out]])
    is_member = np.concatenate([np.ones(len(i_in), bool), np.zeros(len(i_out), bool)])
    masks = half_masks(len(x), n_reference, ctx.seed)
    refs = train_reference_models(ctx.model, x, y, masks, data.spec.training, seed=ctx.seed, cache=ctx.cache,
                                  progress=ctx.progress)
    info = {
        "reference_models": n_reference,
        "reference_trainer": refs.details["trainer"],
        "reference_trainer_note": refs.details["reason"] or refs.details.get("kernel", ""),
        "reference_models_from_cache": refs.details["from_cache"],
        "reference_train_size": int(masks[0].sum()),
        "reference_mask_seed": ctx.seed,
        "reference_pool": "attacked members and non-members; model 2j trains on a random half, 2j+1 on the rest",
        "in_models_per_record": int(masks.sum(axis=0).min()),
        "out_models_per_record": int((~masks).sum(axis=0).min()),
    }
    return x, y, is_member, (i_in, i_out), masks, refs, info


class _ReferenceModelAttack(Attack):
    """An attack measured with reference models (`_reference_pool`), which attacks with the same `samples` and
    number of models share: the audit's graph trains them once, as a job of their own (`Attack.copies`)."""

    def copies(self, profile) -> tuple:
        return _reference_copies(self, profile)

    def prepare(self, ctx: AttackContext) -> None:
        _reference_pool(ctx, *_reference_copies(self, ctx.profile)[1:])


class LiRA(_ReferenceModelAttack):
    """The Likelihood Ratio Attack (Carlini et al., S&P 2022): per-record Gaussians of reference models'
    logit-scaled confidence with (IN) and without (OUT) the record, and a likelihood-ratio test of the audited
    model's confidence. `n_reference` None: 8 / 16 / 64 reference models for the quick / standard / thorough
    profile. `variance`: "global" (one pooled variance, the paper's advice below ~64 models) or "per_example"."""

    name = "lira"
    risk = "membership_inference"
    metrics = ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage")
    needs = frozenset({"scores", "trained_copies"})
    defaults = {"n_reference": None, "online": True, "variance": "global", "samples": None}
    # reference models when `n_reference` is None
    budgets = {"quick": {"n_reference": 8}, "standard": {"n_reference": 16}, "thorough": {"n_reference": 64}}
    parameter_constraints = {
        "n_reference": OptionalOf(Interval(Integral, 2, None)),
        "online": Boolean(),
        "variance": Options(frozenset({"per_example", "global"})),
        "samples": OptionalOf(Interval(Integral, 10, None)),
    }

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        _, samples, k = _reference_copies(self, ctx.profile)
        x, y, is_member, (i_in, i_out), masks, refs, info = _reference_pool(ctx, samples, k)
        target = logit_confidence(logits(ctx.model.module, x), y)
        reference = logit_confidence(refs.logits(x), y)
        scores = lira_scores(target, reference, masks, online=p["online"], variance=p["variance"])
        metrics, details = membership_metrics(scores, is_member, member_records(ctx, i_in, i_out),
                                              reps=ctx.profile.bootstrap_reps, seed=ctx.seed, confidence=ctx.confidence)
        details.update(info, online=p["online"], variance=p["variance"])
        details["most_exposed"] = most_exposed(scores, i_in, i_out)
        return AttackResult(metrics, details)


class RMIA(_ReferenceModelAttack):
    """The Robust Membership Inference Attack (Zarifzadeh et al., ICML 2024): a record's score is the fraction
    of population records z it dominates, LR(x, z) >= `gamma`, with Pr(x) and Pr(z) estimated from 2-4 reference
    models (`n_reference` None: 2 / 4 / 4 for quick / standard / thorough). Offline (`online` false) uses only
    models that did not train on a record, scaled by `a` (the paper's offline approximation).

    Population records z are holdout records outside the attacked sample (`population` of them; None: 1,000 /
    5,000 / 20,000 by profile, at most what exists); when fewer than 50 remain, the attacked non-members serve."""

    name = "rmia"
    risk = "membership_inference"
    metrics = ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage")
    needs = frozenset({"scores", "trained_copies"})
    defaults = {"n_reference": None, "online": True, "gamma": 1.0, "a": 0.3, "population": None, "samples": None}
    # reference models and population records when `n_reference` / `population` is None
    budgets = {"quick": {"n_reference": 2, "population": 1000}, "standard": {"n_reference": 4, "population": 5000},
               "thorough": {"n_reference": 4, "population": 20000}}
    parameter_constraints = {
        "n_reference": OptionalOf(Interval(Integral, 2, None)),
        "online": Boolean(),
        "gamma": Interval(Real, 0.0, None, closed="neither"),
        "a": Interval(Real, 0.0, 1.0),
        "population": OptionalOf(Interval(Integral, 10, None)),
        "samples": OptionalOf(Interval(Integral, 10, None)),
    }

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        _, samples, k = _reference_copies(self, ctx.profile)
        x, y, is_member, (i_in, i_out), masks, refs, info = _reference_pool(ctx, samples, k)
        data = ctx.data
        unused = np.setdiff1d(np.arange(len(data.x_holdout)), i_out)
        budget = p["population"] or self.budget(ctx.profile, "population")
        if len(unused) >= 50:
            rng = np.random.default_rng([ctx.seed, 1])
            pick = np.sort(rng.choice(unused, min(budget, len(unused)), replace=False))
            xz, yz = data.x_holdout[pick], data.y_holdout[pick]
            in_z = np.zeros((k, len(pick)), dtype=bool)  # no reference model trained on them
            source = "holdout records outside the attacked sample"
        else:
            j = np.flatnonzero(~is_member)
            if len(j) > budget:
                j = np.sort(np.random.default_rng([ctx.seed, 1]).choice(j, budget, replace=False))
            xz, yz, in_z = x[j], y[j], masks[:, j]
            source = "the attacked non-members (no other holdout records were left)"
        target_x = true_class_probability(logits(ctx.model.module, x), y)
        target_z = true_class_probability(logits(ctx.model.module, xz), yz)
        ref_x = true_class_probability(refs.logits(x), y)
        ref_z = true_class_probability(refs.logits(xz), yz)
        scores = rmia_scores(target_x, ref_x, masks, target_z, ref_z, in_z, online=p["online"], a=p["a"],
                             gamma=p["gamma"])
        metrics, details = membership_metrics(scores, is_member, member_records(ctx, i_in, i_out),
                                              reps=ctx.profile.bootstrap_reps, seed=ctx.seed, confidence=ctx.confidence)
        details.update(info, online=p["online"], gamma=p["gamma"], a=p["a"], population_records=len(yz),
                       population_source=source)
        details["most_exposed"] = most_exposed(scores, i_in, i_out)
        return AttackResult(metrics, details)
