"""Outlier removal before re-training: a data-sanitisation defense against poisoning.

A model is first trained on the data as given; each training record is then scored by its mean distance to
its k nearest neighbours *of the same label* in that model's output space, the most anomalous `fraction` is
dropped, and a fresh copy is trained on the rest (label-aware k-NN sanitisation after Paudice et al., "Label
Sanitization against Label Flipping Poisoning Attacks", 2018). Flipped labels and planted triggers sit far
from their labelled class. On the audited training data the first model is the audited model itself.
"""

from __future__ import annotations

import dataclasses
from numbers import Integral, Real

import numpy as np

from amulet_audit.core.defense import Defense, DefenseContext
from amulet_audit.training.copies import plain_model, train_inner
from amulet_audit.core.params import Interval, Options


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
    needs = frozenset({"trained_copies"})
    stage = "data"
    defaults = {"fraction": 0.05, "k": 10, "space": "outputs"}
    parameter_constraints = {
        "fraction": Interval(Real, 0, 0.5, closed="right"),
        "k": Interval(Integral, 1, 1000),
        "space": Options(frozenset({"outputs", "inputs"})),
    }

    def keep_mask(self, module, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        from amulet_audit.ops.forward import logits

        p = self.get_params()
        z = logits(module, x) if p["space"] == "outputs" else x.reshape(len(x), -1)
        z = (z - z.mean(axis=0)) / (z.std(axis=0) + 1e-12)
        scores = outlier_scores(z, y, p["k"])
        keep = np.ones(len(x), dtype=bool)
        n_drop = int(round(p["fraction"] * len(x)))
        if n_drop:
            keep[np.argsort(-scores, kind="stable")[:n_drop]] = False
        return keep

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        return self.fit_with(ctx, x, y, recipe, seed)

    def fit_with(self, ctx: DefenseContext, x, y, recipe, seed, *, sample_weight=None, transform=None):
        """Drop the outliers, then train on the rest plainly, or with the procedure of the defenses combined inside
        this one (`train_inner`); per-record weights handed down keep to their records."""
        if transform is not None:
            return super().fit_with(ctx, x, y, recipe, seed, transform=transform)
        keep = self.keep_mask(plain_model(ctx, x, y, recipe, seed), x, y)
        if x is ctx.data.x_train:
            self._removed = {ctx.data.classes[c]: int(((~keep) & (y == c)).sum()) for c in np.unique(y)}
        sensitive = ({k: np.asarray(v)[keep] for k, v in ctx.sensitive.items()}
                     if ctx.sensitive and all(len(v) == len(x) for v in ctx.sensitive.values()) else None)
        return train_inner(dataclasses.replace(ctx, sensitive=sensitive), x[keep], y[keep], recipe, seed,
                           sample_weight=None if sample_weight is None else sample_weight[keep])

    def evidence(self, ctx, module):
        removed = getattr(self, "_removed", {})
        return {"removed": sum(removed.values()), "removed_by_class": removed, "fraction": self.get_params()["fraction"]}
