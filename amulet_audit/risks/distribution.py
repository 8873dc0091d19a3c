"""Distribution (property) inference: can an adversary tell, from the model's outputs alone, which of two training
distributions it was trained on? Here the two differ in the share of one sensitive group (by default 50 % vs 20 %).

The attack follows the shadow-model meta-classifier of Ateniese et al. (IJNSec 2015) and Ganju et al. (CCS 2018),
in the black-box form of Zhang et al. (USENIX Security 2021) and the distinguishing game of Suri & Evans
("Formalizing and Estimating Distribution Inference Risks", PETS 2022): reference models are trained, with the
audited model's architecture and recipe, on subsets of the holdout pool drawn with each of the two group shares; a
logistic-regression meta-classifier on their log-probabilities over a fixed query set learns to tell the two apart.
`distinguishing_accuracy` is its cross-validated accuracy over the reference models (0.5: the property stays hidden);
the audited model is then classified by the meta-classifier fitted on all of them.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np

from amulet_audit.training.estimators import fits_copies
from amulet_audit.core.attack import Attack, AttackContext, AttackResult, MetricSpec, rate
from amulet_audit.ops.forward import logits as model_logits
from amulet_audit.core.params import Interval, OptionalOf, Text

DISTINGUISHING_ACCURACY = MetricSpec(
    "distinguishing_accuracy",
    "Cross-validated accuracy of a meta-classifier telling apart models trained with two different shares of a "
    "sensitive group, from their outputs; 0.5 is chance.",
    higher_is_worse=True, kind="rate", unit="fraction",
)



class RatioPair:
    """Constraint: two distinct shares strictly between 0 and 1, e.g. [0.5, 0.2]."""

    def check(self, v: Any) -> bool:
        return (isinstance(v, (list, tuple)) and len(v) == 2
                and all(isinstance(r, Real) and not isinstance(r, bool) and 0 < r < 1 for r in v) and v[0] != v[1])

    def __str__(self) -> str:
        return "two different shares strictly between 0 and 1, e.g. [0.5, 0.2]"


def meta_features(z: np.ndarray) -> np.ndarray:
    """Per model, its log-probabilities over the query set as one standardised vector: (K, n, C) -> (K, n*C), or
    (K, n) of log-odds for binary tasks (the two columns carry the same information)."""
    z = z - z.max(axis=2, keepdims=True)
    logp = np.maximum(z - np.log(np.exp(z).sum(axis=2, keepdims=True)), -50.0)
    v = logp[:, :, 1] - logp[:, :, 0] if logp.shape[2] == 2 else logp.reshape(len(logp), -1)
    # Each model's vector is centred and scaled on its own: what differs between the two training distributions is
    # which inputs a model favours, whereas its overall confidence depends on how long and on how much data it was
    # trained, which differs between the reference models and the audited one.
    return (v - v.mean(axis=1, keepdims=True)) / np.maximum(v.std(axis=1, keepdims=True), 1e-12)


def _meta_classifier():
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=5000))


def cross_validated_scores(features: np.ndarray, labels: np.ndarray, *, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of label 1 from the meta-classifier (leave-one-out up to 64 models, else stratified
    10-fold); a reference model is predicted as label 1 when its score is above 0.5."""
    from sklearn.model_selection import LeaveOneOut, StratifiedKFold, cross_val_predict
    from threadpoolctl import threadpool_limits

    splitter = LeaveOneOut() if len(labels) <= 64 else StratifiedKFold(10, shuffle=True, random_state=seed)
    with threadpool_limits(1):
        proba = cross_val_predict(_meta_classifier(), features, labels, cv=splitter, method="predict_proba")
    return np.asarray(proba[:, 1], dtype=np.float64)


class PropertyInference(Attack):
    """Shadow-model property inference on the share of a sensitive group in the training data.

    Parameters: `attribute` (None: the first sensitive attribute), `group` (None: its rarest value in the holdout
    records), `ratios` (the two shares of `group` to tell apart), `models` (reference models per share; None: quick 6,
    standard 16, thorough 32), `epochs` (None: the recipe's, capped at 10 in the quick profile), `train_size`
    (records per reference model; None: the audited model's training-set size, capped by profile and by what the
    holdout pool can supply at both shares), `queries` (query records; None: quick 200, standard 500, thorough 1000).

    The holdout records are split once into a query set and a pool; each reference model draws its training set from
    the pool without replacement at its share. The interval is exact binomial over the reference models' out-of-fold
    predictions.
    """

    name = "property_inference"
    risk = "distribution_inference"
    metrics = ("distinguishing_accuracy",)
    needs = frozenset({"sensitive", "scores", "trained_copies"})
    # Per profile: reference models per side, cap on their epochs (None: the recipe's), cap on their training size
    # (None: no cap), query records.
    budgets = {"quick": {"models": 6, "epoch_cap": 10, "size_cap": 1000, "queries": 200},
               "standard": {"models": 16, "epoch_cap": None, "size_cap": 5000, "queries": 500},
               "thorough": {"models": 32, "epoch_cap": None, "size_cap": None, "queries": 1000}}
    defaults = {"attribute": None, "group": None, "ratios": (0.5, 0.2), "models": None, "epochs": None,
                "train_size": None, "queries": None}
    parameter_constraints = {
        "attribute": OptionalOf(Text()),
        "group": OptionalOf(Text()),
        "ratios": RatioPair(),
        "models": OptionalOf(Interval(Integral, 2, 1000)),
        "epochs": OptionalOf(Interval(Integral, 1, 10_000)),
        "train_size": OptionalOf(Interval(Integral, 10, None)),
        "queries": OptionalOf(Interval(Integral, 1, None)),
    }

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data = ctx.data
        if not data.sensitive_holdout:
            return AttackResult({}, not_applicable="the data spec names no sensitive attribute")
        attr = p["attribute"] or next(iter(data.sensitive_holdout))
        if attr not in data.sensitive_holdout:
            return AttackResult({}, not_applicable=f"'{attr}' is not a sensitive attribute of the data spec")
        groups_h = data.sensitive_holdout[attr]
        names, counts = np.unique(groups_h, return_counts=True)
        if len(names) < 2:
            return AttackResult({}, not_applicable=f"'{attr}' takes a single value in the holdout records")
        group = p["group"] if p["group"] is not None else str(names[np.argmin(counts)])
        if group not in names:
            return AttackResult({}, not_applicable=f"no holdout record has {attr} = '{group}'")
        ratios = [float(r) for r in p["ratios"]]
        per_side, epoch_cap, size_cap, default_queries = tuple(self.budget(ctx.profile, k) for k in ("models", "epoch_cap", "size_cap", "queries"))
        per_side = p["models"] or per_side
        recipe = data.spec.training
        epochs = p["epochs"] or (min(recipe.epochs, epoch_cap) if epoch_cap else recipe.epochs)

        rng = np.random.default_rng(ctx.seed)
        n_h = len(groups_h)
        n_q = min(p["queries"] or default_queries, n_h // 4)
        order = rng.permutation(n_h)
        query, pool = np.sort(order[:n_q]), np.sort(order[n_q:])
        in_group = groups_h[pool] == group
        idx_group, idx_other = np.flatnonzero(in_group), np.flatnonzero(~in_group)
        # Each model draws at most half of what the pool holds at either share, so that training sets differ.
        feasible = min(len(idx_group) / (2 * max(ratios)), len(idx_other) / (2 * (1 - min(ratios))))
        wanted = p["train_size"] or min(len(data.y_train), size_cap or len(data.y_train))
        size = min(int(wanted), int(feasible))
        if size < 10:
            return AttackResult({}, not_applicable=(
                f"the holdout records hold too few with and without {attr} = '{group}' to train reference models "
                f"at shares {ratios}"))

        masks = np.zeros((2 * per_side, len(pool)), dtype=bool)
        labels = np.repeat([0, 1], per_side)
        for k, side in enumerate(labels):
            n_in = int(round(size * ratios[side]))
            masks[k, rng.choice(idx_group, n_in, replace=False)] = True
            masks[k, rng.choice(idx_other, size - n_in, replace=False)] = True
        x_pool, y_pool, x_query = data.x_holdout[pool], data.y_holdout[pool], data.x_holdout[query]

        progress = (lambda f: ctx.progress(0.9 * f)) if ctx.progress else None
        from amulet_audit.training.reference import train_reference_models

        refs = train_reference_models(ctx.model, x_pool, y_pool, masks, recipe.model_copy(update={"epochs": int(epochs)}),
                                      seed=ctx.seed + 1, cache=ctx.cache, progress=progress)
        features = meta_features(np.asarray(refs.logits(x_query), dtype=np.float64))
        scores = cross_validated_scores(features, labels, seed=ctx.seed)
        predicted = (scores > 0.5).astype(np.int64)
        k_ok, n = int((predicted == labels).sum()), len(labels)

        meta = _meta_classifier()
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1):
            meta.fit(features, labels)
            audited = meta_features(model_logits(ctx.model.module, x_query)[None])
            prob = meta.predict_proba(audited)[0]
        side = int(np.argmax(prob))
        actual = float(np.mean(data.sensitive_train[attr] == group)) if len(data.sensitive_train.get(attr, [])) else None
        if ctx.progress:
            ctx.progress(1.0)
        details = {
            "attribute": attr, "group": group, "ratios": ratios, "models_per_ratio": int(per_side),
            "reference_models": n, "correct": k_ok, "train_size": int(size), "epochs": int(epochs),
            "recipe_epochs": int(recipe.epochs), "queries": int(n_q), "pool": int(len(pool)),
            "cross_validation": "leave-one-out" if n <= 64 else "stratified 10-fold",
            "trainer": refs.details.get("trainer"),
            "per_ratio_accuracy": [float((predicted[labels == s] == s).mean()) for s in (0, 1)],
            # out of fold, per share: each reference model's probability of the second share
            "reference_scores": [[round(float(v), 4) for v in scores[labels == s]] for s in (0, 1)],
            "audited_predicted_ratio": ratios[side], "audited_probability": float(prob[side]),
            "audited_probabilities": {str(r): float(q) for r, q in zip(ratios, prob)},
            "audited_actual_ratio": actual,
        }
        warnings = []
        if epochs < recipe.epochs and not fits_copies(ctx.model):  # estimator clones have no epochs
            warnings.append(f"Reference models were trained for {epochs} epochs instead of the recipe's {recipe.epochs} "
                            f"({ctx.profile.name} profile budget); the audited model is classified across that gap.")
        if size < len(data.y_train):
            warnings.append(f"Reference models were trained on {size:,} records each; the audited model on "
                            f"{len(data.y_train):,}.")
        details["warnings"] = warnings
        # records: the reference models (trained the same way whichever model is audited)
        return AttackResult({"distinguishing_accuracy": rate(predicted == labels, np.arange(n), confidence=ctx.confidence)},
                            details)
