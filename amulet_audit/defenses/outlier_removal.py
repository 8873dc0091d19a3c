"""Outlier removal before re-training: a data-sanitisation defense against poisoning.

Each training record is scored by its mean distance to its k nearest neighbours *of the same label* in the
audited model's representation (its outputs: logits), and the most anomalous `fraction` is dropped before a
fresh copy is trained (label-aware k-NN sanitisation after Paudice et al., "Label Sanitization against Label
Flipping Poisoning Attacks", 2018). Flipped labels and planted triggers sit far from their labelled class.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from amulet_audit.defenses.base import Defense, DefenseContext, DefenseOutcome, clean_accuracy, defended_handle, retrain
from amulet_audit.risks.params import Interval, Options


def outlier_scores(z: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    """Mean distance to the k nearest same-label neighbours (higher = more anomalous), per record."""
    from sklearn.neighbors import NearestNeighbors

    scores = np.zeros(len(z))
    for label in np.unique(y):
        idx = np.where(y == label)[0]
        kk = min(k + 1, len(idx))
        if kk < 2:
            continue
        dist, _ = NearestNeighbors(n_neighbors=kk).fit(z[idx]).kneighbors(z[idx])
        scores[idx] = dist[:, 1:].mean(axis=1)  # column 0 is the record itself
    return scores


class OutlierRemoval(Defense):
    name = "outlier_removal"
    intended = ("poisoning",)
    description = "Training-data sanitisation (label-aware k-NN outlier removal)"
    defaults = {"fraction": 0.05, "k": 10, "space": "outputs"}
    parameter_constraints = {
        "fraction": Interval(Real, 0, 0.5, closed="right"),
        "k": Interval(Integral, 1, 1000),
        "space": Options(frozenset({"outputs", "inputs"})),
    }

    def apply(self, ctx: DefenseContext) -> DefenseOutcome:
        from amulet_audit.risks.inference import logits

        p = self.get_params()
        data = ctx.data
        x, y = data.x_train, data.y_train
        z = logits(ctx.model.module, x) if p["space"] == "outputs" else x.reshape(len(x), -1)
        z = (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-12)
        scores = outlier_scores(z, y, p["k"])
        n_drop = int(round(p["fraction"] * len(x)))
        keep = np.ones(len(x), dtype=bool)
        if n_drop:
            keep[np.argsort(-scores, kind="stable")[:n_drop]] = False
        module = retrain(ctx, ("outlier_removal", p), x[keep], y[keep])
        dropped_by_class = {data.classes[c]: int(((~keep) & (y == c)).sum()) for c in np.unique(y)}
        return DefenseOutcome(defended_handle(ctx.model, module, f"outlier_removal:{p}"), {
            "removed": int(n_drop), "kept": int(keep.sum()), "removed_by_class": dropped_by_class,
            "score_threshold": float(np.sort(scores)[::-1][n_drop - 1]) if n_drop else None,
            "clean_accuracy": clean_accuracy(module, data),
        })
