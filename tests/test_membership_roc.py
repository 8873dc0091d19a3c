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
