"""Membership inference: the LOSS attack (Yeom et al., CSF 2018) — a threshold on per-example loss,
evaluated over every threshold (ROC), as in Carlini et al. (S&P 2022) at low false-positive rates."""

from __future__ import annotations

from numbers import Integral

import numpy as np

from amulet_audit.risks.base import Attack, AttackContext, AttackResult, Measurement, MetricSpec
from amulet_audit.risks.inference import cross_entropy, logits
from amulet_audit.risks.params import Interval, OptionalOf
from amulet_audit.stats import binomial_ci, bootstrap_ci

AUC = MetricSpec("auc", "Area under the membership ROC curve; 0.5 is chance.", higher_is_worse=True)
TPR_AT_FPR_001 = MetricSpec(
    "tpr_at_fpr_0.01", "Members identified at a 1% false-positive rate.", higher_is_worse=True, kind="rate",
    min_n=100, min_n_of="non-members",
)
TPR_AT_FPR_0001 = MetricSpec(
    "tpr_at_fpr_0.001", "Members identified at a 0.1% false-positive rate.", higher_is_worse=True, kind="rate",
    min_n=1000, min_n_of="non-members",
)
ADVANTAGE = MetricSpec("advantage", "Membership advantage max(TPR - FPR) (Yeom et al. 2018).", higher_is_worse=True)


def roc_points(scores: np.ndarray, is_member: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(is_member, scores)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """Highest TPR reachable with FPR at most `target`."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def membership_metrics(scores: np.ndarray, is_member: np.ndarray, *, reps: int, seed: int, confidence: float) -> tuple[dict, dict]:
    """Every membership metric, with intervals, from attack scores (higher = more likely a member).

    Shared by all membership attacks so they are measured identically."""
    from sklearn.metrics import roc_auc_score

    is_member = is_member.astype(bool)
    n_in, n_out = int(is_member.sum()), int((~is_member).sum())
    fpr, tpr = roc_points(scores, is_member)
    members, non_members = np.where(is_member)[0], np.where(~is_member)[0]
    strata = [members, non_members]

    def auc_of(idx):
        return roc_auc_score(is_member[idx], scores[idx])

    def adv_of(idx):
        f, t = roc_points(scores[idx], is_member[idx])
        return float(np.max(t - f))

    out = {
        "auc": Measurement(float(roc_auc_score(is_member, scores)),
                           bootstrap_ci(auc_of, len(scores), reps=reps, seed=seed, confidence=confidence, strata=strata), n_in + n_out),
        "advantage": Measurement(float(np.max(tpr - fpr)),
                                 bootstrap_ci(adv_of, len(scores), reps=reps, seed=seed + 1, confidence=confidence, strata=strata),
                                 n_in + n_out),
    }
    for spec, target in ((TPR_AT_FPR_001, 0.01), (TPR_AT_FPR_0001, 0.001)):
        value = tpr_at_fpr(fpr, tpr, target)
        k = int(round(value * n_in))
        need = spec.min_n
        reason = "" if n_out >= need else (
            f"TPR at {target:.1%} FPR needs at least {need:,} non-members to be estimated; only {n_out:,} were available"
        )
        out[spec.name] = Measurement(value, binomial_ci(k, n_in, confidence), n_in, reason)
    details = {"roc": _downsample_roc(fpr, tpr), "n_members": n_in, "n_nonmembers": n_out, "auc": out["auc"].value}
    return out, details


def _downsample_roc(fpr: np.ndarray, tpr: np.ndarray, points: int = 300) -> dict:
    """Keep the ROC's shape on a log FPR axis with a bounded number of points."""
    if len(fpr) <= points:
        return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}
    grid = np.unique(np.concatenate([[0.0], np.logspace(-5, 0, points - 1)]))
    pos = np.searchsorted(fpr, grid, side="right") - 1
    pos = np.unique(np.clip(pos, 0, len(fpr) - 1))
    return {"fpr": fpr[pos].tolist(), "tpr": tpr[pos].tolist()}


def balanced_sample(ctx: AttackContext, limit: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal numbers of members (train) and non-members (holdout), up to the profile's budget.
    Returns (x, y, is_member)."""
    data = ctx.data
    rng = np.random.default_rng(ctx.seed)
    m = min(len(data.x_train), len(data.x_holdout), limit or ctx.profile.mia_samples)
    i_in = np.sort(rng.choice(len(data.x_train), m, replace=False))
    i_out = np.sort(rng.choice(len(data.x_holdout), m, replace=False))
    x = np.concatenate([data.x_train[i_in], data.x_holdout[i_out]])
    y = np.concatenate([data.y_train[i_in], data.y_holdout[i_out]])
    return x, y, np.concatenate([np.ones(m, bool), np.zeros(m, bool)])


class LossAttack(Attack):
    """Score each record by its negative cross-entropy loss under the audited model; members have lower loss."""

    name = "loss"
    risk = "membership_inference"
    metrics = ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage")
    defaults = {"samples": None}
    parameter_constraints = {"samples": OptionalOf(Interval(Integral, 10, None))}

    def run(self, ctx: AttackContext) -> AttackResult:
        x, y, is_member = balanced_sample(ctx, self.get_params()["samples"])
        scores = -cross_entropy(logits(ctx.model.module, x), y)
        metrics, details = membership_metrics(scores, is_member, reps=ctx.profile.bootstrap_reps, seed=ctx.seed,
                                              confidence=ctx.confidence)
        return AttackResult(metrics, details)
