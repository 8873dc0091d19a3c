"""The membership ROC curve and AUC, computed without scikit-learn's per-call validation, equal scikit-learn's."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from amulet_audit.risks.membership import auc_statistic, roc_points


def test_roc_points_and_auc_equal_scikit_learn_with_and_without_ties():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(3, 200))
        member = rng.integers(0, 2, n).astype(bool)
        if member.all() or not member.any():
            continue
        score = rng.normal(size=n)
        if trial % 3 == 1:
            score = np.round(score, 1)  # ties between records
        elif trial % 3 == 2:
            score = rng.integers(0, 3, n).astype(float)  # a few distinct scores: collinear ROC points
        fpr, tpr, _ = roc_curve(member, score)
        ours = roc_points(score, member)
        assert np.array_equal(ours[0], fpr) and np.array_equal(ours[1], tpr)
        assert auc_statistic({"score": score, "member": member}) == roc_auc_score(member, score)


def test_weighted_tpr_at_fpr_equals_the_resampled_and_the_weighted_roc():
    """`tpr_at_fpr_weighted`, which computes bootstrap replicates all at once, gives `tpr_statistic` of each resample
    exactly (count weights, distinct scores), and scikit-learn's weighted ROC read by `tpr_at_fpr` for continuous
    weights, with and without ties."""
    from amulet_audit.core.stats import bootstrap_indices
    from amulet_audit.risks.membership import tpr_at_fpr, tpr_at_fpr_weighted, tpr_statistic

    rng = np.random.default_rng(1)
    for trial in range(120):
        n = int(rng.integers(5, 300))
        member = rng.integers(0, 2, n).astype(bool)
        if member.all() or not member.any():
            continue
        target = (0.001, 0.01, 0.05, 0.3)[trial % 4]
        score = rng.normal(size=n)
        idx = bootstrap_indices(n, reps=10, seed=trial, strata=[np.flatnonzero(member), np.flatnonzero(~member)])
        c = np.stack([np.bincount(i, minlength=n) for i in idx]).astype(float)
        resampled = [tpr_statistic({"score": score[i], "member": member[i]}, target) for i in idx]
        assert np.array_equal(tpr_at_fpr_weighted(score, member, c, target), resampled)
        if trial % 3 == 1:
            score = np.round(score, 1)
        elif trial % 3 == 2:
            score = rng.integers(0, 3, n).astype(float)
        w = rng.standard_exponential((10, n))
        expected = [tpr_at_fpr(*roc_curve(member, score, sample_weight=wr)[:2], target) for wr in w]
        assert np.allclose(tpr_at_fpr_weighted(score, member, w, target), expected, rtol=0, atol=1e-12)


def test_advantage_curves_give_the_advantage_of_each_resample():
    from amulet_audit.core.stats import bootstrap_counts, bootstrap_indices
    from amulet_audit.risks.membership import advantage_curves, advantage_statistic

    rng = np.random.default_rng(2)
    for trial in range(60):
        n = int(rng.integers(5, 300))
        member = rng.integers(0, 2, n).astype(bool)
        if member.all() or not member.any():
            continue
        score = rng.normal(size=n) if trial % 2 else np.round(rng.normal(size=n), 1)
        strata = [np.flatnonzero(member), np.flatnonzero(~member)]
        idx = bootstrap_indices(n, reps=10, seed=trial, strata=strata)
        c = next(bootstrap_counts(n, reps=10, seed=trial, strata=strata))
        assert np.array_equal(c, np.stack([np.bincount(i, minlength=n) for i in idx]))
        resampled = [advantage_statistic({"score": score[i], "member": member[i]}) for i in idx]
        assert np.array_equal(advantage_curves(score, member, c).max(axis=1), resampled)


def test_tpr_interval_ends_are_the_weighted_tpr_with_one_more_member_and_non_member():
    from amulet_audit.risks.membership import _tpr_ends, tpr_at_fpr_weighted

    rng = np.random.default_rng(3)
    for trial in range(40):
        n = int(rng.integers(5, 200))
        member = rng.integers(0, 2, n).astype(bool)
        score = rng.normal(size=n) if trial % 2 else rng.integers(0, 4, n).astype(float)
        target = (0.01, 0.05, 0.3)[trial % 3]
        w = rng.standard_exponential((8, n + 2))
        ends = _tpr_ends(score, member, target, w)
        with_extra = np.r_[member, True, False]
        for col, (extra_in, extra_out) in enumerate(((-np.inf, np.inf), (np.inf, -np.inf))):
            expected = tpr_at_fpr_weighted(np.r_[score, extra_in, extra_out], with_extra, w, target)
            assert np.allclose(ends[:, col], expected, rtol=0, atol=1e-12)
