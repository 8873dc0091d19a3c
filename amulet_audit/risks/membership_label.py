"""Membership inference from predicted labels alone (Choquette-Choo, Tramèr, Carlini & Papernot, "Label-Only
Membership Inference Attacks", ICML 2021).

A model tends to classify its training records correctly, and to keep doing so when they are perturbed a little:
it has fitted the neighbourhood of each member. Two of the paper's label-only attacks, for any model whose top label
can be queried (a label-only model included; no scores, gradients or reference models needed):

- `noise` (the paper's data-augmentation attack for tabular data, §4.2-4.3 "noise robustness"): each record is
  queried as it is and as `copies` perturbed copies at each of several noise scales (Gaussian noise per continuous
  feature, scaled by its holdout standard deviation; binary features flipped at random); what is read is whether
  the record is labelled correctly and the share of its copies labelled correctly at each scale;
- `boundary` (the paper's decision-boundary-distance attack, §4.4): the L2 distance, in units of each feature's
  holdout standard deviation, from the record to the nearest label change that HopSkipJump finds
  (`amulet_audit.risks.evasion_decision`), 0 where the record is misclassified.

As in the paper, an attack model turns what was read into a membership score: a logistic regression trained on
records of known membership (the paper trains it on a shadow model's; a label-only model has no trained copies, so
here on the audit's own members and non-members, cross-fitted so that no record is scored by a model fitted on
it), or a fixed rule. Higher scores mean "member". Every membership metric (AUC, TPR at low FPR, advantage) and its interval comes from
the shared `membership_metrics`, exactly as for the score-based attacks.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult
from amulet_audit.core.params import Interval, OptionalOf, Options
from amulet_audit.risks.membership import balanced_indices, member_records, membership_metrics, most_exposed

# The noise scales queried, as fractions of the largest (`noise`): from barely moving a record to moving it by
# `noise` standard deviations per feature (memorised records can be either very robust or very fragile: several
# scales let the attack model tell).
NOISE_LADDER = (0.05, 0.1, 0.25, 0.5, 1.0)


def binary_features(x: np.ndarray) -> np.ndarray:
    """Per feature of `x` (n, d): True where it takes exactly two distinct values (a flag, a one-hot column); such
    features are flipped rather than moved by Gaussian noise."""
    out = np.zeros(x.shape[1], dtype=bool)
    for j in range(x.shape[1]):
        out[j] = len(np.unique(x[:, j])) == 2
    return out


def noise_robustness(module, x: np.ndarray, y: np.ndarray, *, scales, copies: int, spread: np.ndarray, flip: float,
                     bounds=None, seed: int = 0, reference: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, int]:
    """What the paper's data-augmentation attack reads (Choquette-Choo et al., ICML 2021, §4.2-4.3): per record,
    whether the model labels it correctly, and the share of `copies` perturbed copies at each of `scales` that it
    labels correctly.

    A copy at scale s adds N(0, (s * spread_j)^2) to each continuous feature j (`spread` (d,): in the data's units,
    usually the holdout standard deviation) and, with probability min(s, 1) * `flip`, swaps each binary feature
    (two distinct values in `reference`, default `x`) to its other value; copies are clipped to `bounds` (low,
    high) when given. `x` (n, *shape) float32, `y` (n,) class indices. Returns (correct (n,) 0/1, shares
    (n, len(scales)) in [0, 1], queries made). Deterministic for a seed."""
    from amulet_audit.ops.forward import predict

    rng = np.random.default_rng(seed)
    n, shape = len(x), x.shape[1:]
    flat = np.asarray(x, dtype=np.float64).reshape(n, -1)
    ref = flat if reference is None else np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    binary = binary_features(ref)
    low_v = np.where(binary, ref.min(axis=0), 0.0)
    high_v = np.where(binary, ref.max(axis=0), 0.0)
    sd = np.where(binary, 0.0, np.asarray(spread, dtype=np.float64).reshape(-1))
    clean = (predict(module, flat.astype(np.float32).reshape((n, *shape))) == y).astype(np.float64)
    shares = np.zeros((n, len(scales)))
    queries = n
    for k, s in enumerate(scales):
        for _ in range(copies):
            noisy = flat + rng.standard_normal(flat.shape) * (s * sd)
            swap = binary & (rng.random(flat.shape) < min(float(s), 1.0) * flip)
            noisy = np.where(swap, low_v + high_v - flat, noisy)
            if bounds is not None:
                noisy = np.clip(noisy, np.asarray(bounds[0], dtype=np.float64).reshape(-1),
                                np.asarray(bounds[1], dtype=np.float64).reshape(-1))
            shares[:, k] += predict(module, noisy.astype(np.float32).reshape((n, *shape))) == y
            queries += n
    return clean, shares / copies, queries


def fitted_scores(features: np.ndarray, is_member: np.ndarray, *, folds: int, seed: int) -> np.ndarray:
    """Out-of-fold membership scores: a logistic regression on the standardised `features` (n, k), fitted on the
    other folds of a stratified `folds`-fold split of the attacked records and scoring the held-out fold (the
    paper's attack model, trained on records of known membership; here the audit's own known members and
    non-members, never the record being scored). Returns the predicted member probabilities (n,)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.zeros(len(features))
    split = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in split.split(features, is_member):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        out[test] = model.fit(features[train], is_member[train]).predict_proba(features[test])[:, 1]
    return out


def boundary_distance_scores(module, x: np.ndarray, y: np.ndarray, *, spread: np.ndarray, center: np.ndarray,
                             bounds=None, queries: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """The decision-boundary distance (Choquette-Choo et al., ICML 2021, §4.4): per record, the L2 distance in units
    of each feature's `spread` to the nearest differently labelled point HopSkipJump finds within `queries` label
    queries (0 for a misclassified record; the largest finite distance found where no label change was found).
    Returns (scores (n,), queries made)."""
    from amulet_audit.risks.evasion import rescaled
    from amulet_audit.risks.evasion_decision import hopskipjump

    module_n, x_n, bounds_n = rescaled(module, x, bounds, np.asarray(spread, dtype=np.float64), center)
    lo, hi = bounds_n[0].numpy(), bounds_n[1].numpy()
    out = hopskipjump(module_n, x_n, y, norm="l2", queries=queries, bounds=(lo, hi), seed=seed)
    dist = out["distance"]
    finite = dist[np.isfinite(dist)]
    dist = np.where(np.isfinite(dist), dist, finite.max() if finite.size else 1.0)
    return dist, int(out["queries"].sum())


class LabelOnly(Attack):
    """Label-only membership inference (Choquette-Choo et al., ICML 2021) on a balanced sample of members
    (training records) and non-members (holdout records), `samples` of each (None: the profile's budget).

    `method: noise` (default): whether the model labels each record correctly, and the share of `copies` perturbed
    copies (None: the profile's budget) it labels correctly at each scale `noise` * (0.05, 0.1, 0.25, 0.5, 1), the
    noise in standard deviations of each feature on the holdout; binary features are flipped with probability
    `flip` times the scale (at most `flip`). `method: boundary`: whether the record is labelled correctly, and the
    L2 distance (in per-feature standard deviations) to the nearest label change HopSkipJump finds within `queries`
    label queries per record (None: the profile's budget).

    `combine: fitted` (default) turns these into a score with the paper's attack model, a logistic regression
    trained on records of known membership: cross-fitted over `folds` stratified folds of the attacked records, so
    that no record is scored by a model fitted on it. `combine: rule` uses a fixed rule instead (correct + mean share
    for noise; the distance, 0 when misclassified, for boundary): no fitting, but a memorised record that is fragile
    rather than robust then counts against membership."""

    name = "label_only"
    risk = "membership_inference"
    metrics = ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001", "advantage")
    needs = frozenset()  # predicted labels only
    defaults = {"method": "noise", "noise": 1.0, "copies": None, "flip": 0.1, "queries": None, "combine": "fitted",
                "folds": 2, "samples": None}
    parameter_constraints = {
        "method": Options(frozenset({"noise", "boundary"})),
        "noise": Interval(Real, 0, None, closed="neither"),
        "copies": OptionalOf(Interval(Integral, 1, 10_000)),
        "flip": Interval(Real, 0.0, 1.0),
        "queries": OptionalOf(Interval(Integral, 10, None)),
        "combine": Options(frozenset({"fitted", "rule"})),
        "folds": Interval(Integral, 2, 10),
        "samples": OptionalOf(Interval(Integral, 10, None)),
    }
    # perturbed copies per noise scale (noise), label queries per record (boundary)
    budgets = {"quick": {"copies": 25, "queries": 500}, "standard": {"copies": 50, "queries": 1000},
               "thorough": {"copies": 100, "queries": 2500}}

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data = ctx.data
        i_in, i_out = balanced_indices(ctx, p["samples"])
        x = np.concatenate([data.x_train[i_in], data.x_holdout[i_out]])
        y = np.concatenate([data.y_train[i_in], data.y_holdout[i_out]])
        is_member = np.concatenate([np.ones(len(i_in), bool), np.zeros(len(i_out), bool)])
        holdout = np.asarray(data.x_holdout, dtype=np.float64).reshape(len(data.x_holdout), -1)
        std = holdout.std(axis=0)
        spread = np.where(std > 0, std, 0.0)
        bounds = data.input_range
        module = ctx.model.module
        info: dict = {"access": "predicted labels only", "method": p["method"], "combine": p["combine"]}
        if p["method"] == "noise":
            copies = int(p["copies"] or self.budget(ctx.profile, "copies"))
            scales = [float(p["noise"]) * f for f in NOISE_LADDER]
            reference = np.concatenate([np.asarray(data.x_train).reshape(len(data.x_train), -1), holdout])
            clean, shares, queries = noise_robustness(module, x, y, scales=scales, copies=copies, spread=spread,
                                                      flip=float(p["flip"]), bounds=bounds, seed=ctx.seed,
                                                      reference=reference)
            features, rule = np.column_stack([clean, shares]), clean + shares.mean(axis=1)
            info.update(noise_scales_std=scales, copies_per_scale=copies, flip=float(p["flip"]),
                        binary_features=int(binary_features(reference).sum()),
                        features="labelled correctly; share of perturbed copies labelled correctly at each scale")
        else:
            budget = int(p["queries"] or self.budget(ctx.profile, "queries"))
            dist, queries = boundary_distance_scores(module, x, y, spread=spread, center=np.median(holdout, axis=0),
                                                     bounds=bounds, queries=budget, seed=ctx.seed)
            features, rule = np.column_stack([dist > 0, dist, np.log1p(dist)]).astype(np.float64), dist
            info.update(queries_per_record=budget, norm="l2", distance_units="per-feature holdout standard deviations",
                        distance_median={"members": float(np.median(dist[is_member])),
                                         "non_members": float(np.median(dist[~is_member]))},
                        features="labelled correctly; distance to the nearest label change HopSkipJump found")
        if p["combine"] == "fitted":
            scores = fitted_scores(features, is_member, folds=int(p["folds"]), seed=ctx.seed)
            info.update(folds=int(p["folds"]), attack_model="logistic regression on standardised features, "
                        "cross-fitted: each record scored by a model fitted on the other folds")
        else:
            scores = rule
        metrics, details = membership_metrics(scores, is_member, member_records(ctx, i_in, i_out),
                                              reps=ctx.profile.bootstrap_reps, seed=ctx.seed, confidence=ctx.confidence)
        details.update(info, queries_total=int(queries))
        details["most_exposed"] = most_exposed(scores, i_in, i_out)
        return AttackResult(metrics, details)
