"""Attribute inference: an attack model that predicts a record's sensitive attribute from the audited model's
outputs (Fredrikson et al., USENIX Security 2014; Yeom et al., CSF 2018), measured against the best prediction
that uses no model output.

Threat model. The adversary holds auxiliary records of the population with their sensitive attribute (here: the
holdout records) and query access to the model's output probabilities. It trains an attack classifier on
(model output [, other features and label]) -> attribute over its auxiliary records and applies it to the victims
(the training records, members). Jayaraman & Evans (USENIX Security 2022, "Are attribute inference attacks just
imputation?") show that much of what such attacks achieve is imputation from the population distribution, which
needs no model at all. The risk the model itself adds is therefore the attack's balanced accuracy minus that of
the same adversary without the model: the class prior (1/k balanced accuracy) when only outputs are used, or the
same classifier trained on the other features alone when `use_features` is set.
"""

from __future__ import annotations

from functools import partial
from numbers import Integral

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec, PairedSample
from amulet_audit.ops.forward import logits
from amulet_audit.core.params import Boolean, Interval, OptionalOf, Options, Text
from amulet_audit.core.stats import CI_BOOTSTRAP, sample_ci

BALANCED_ACCURACY = MetricSpec(
    "balanced_accuracy",
    "Balanced accuracy (mean per-group recall) of the attack's guesses of the sensitive attribute of training records.",
    higher_is_worse=True, unit="fraction",
)
ADVANTAGE_OVER_PRIOR = MetricSpec(
    "advantage_over_prior",
    "Balanced accuracy of the attack minus that of the best guess without the model (the prior, or the other "
    "features alone); 0 means the model discloses nothing beyond the population statistics.",
    higher_is_worse=True, unit="difference",
)

_METRICS = ("balanced_accuracy", "advantage_over_prior")


def balanced_accuracy(codes_true: np.ndarray, codes_pred: np.ndarray, n_groups: int) -> float:
    """Mean recall over the groups present in `codes_true` (integer group codes 0..n_groups-1); 0..1."""
    count = np.bincount(codes_true, minlength=n_groups)
    hit = np.bincount(codes_true, weights=codes_true == codes_pred, minlength=n_groups)
    present = count > 0
    return float(np.mean(hit[present] / count[present])) if present.any() else float("nan")


def _sample_statistic(sample: dict[str, np.ndarray], metric: str, n_groups: int) -> float:
    """balanced_accuracy of the attack, or its advantage over the baseline, from a per-victim sample
    ({"group", "attack", "baseline"}: true and predicted group codes)."""
    attack = balanced_accuracy(sample["group"], sample["attack"], n_groups)
    if metric == "balanced_accuracy":
        return attack
    return attack - balanced_accuracy(sample["group"], sample["baseline"], n_groups)


def log_probabilities(z: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax of logits `z` (natural log), floored at -50 so that saturated outputs stay finite."""
    z = z - z.max(axis=1, keepdims=True)
    return np.maximum(z - np.log(np.exp(z).sum(axis=1, keepdims=True)), -50.0)


def _classifier(kind: str, seed: int):
    if kind == "logistic":
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    from sklearn.ensemble import HistGradientBoostingClassifier

    # No early stopping: it would hold out a random validation split; the fit stays deterministic for a seed.
    return HistGradientBoostingClassifier(max_iter=100, learning_rate=0.1, max_leaf_nodes=15, class_weight="balanced",
                                          early_stopping=False, random_state=seed)


def _fit_predict(kind: str, seed: int, x_aux: np.ndarray, g_aux: np.ndarray, x_victim: np.ndarray) -> np.ndarray:
    from threadpoolctl import threadpool_limits

    clf = _classifier(kind, seed)
    # One OpenMP thread: on shared cores the default pool spins and is many times slower for data this small.
    with threadpool_limits(1):
        clf.fit(x_aux, g_aux)
        return np.asarray(clf.predict(x_victim), dtype=np.int64)


class AttributeInference(Attack):
    """Train an attack classifier on the audited model's outputs over holdout records (the adversary's auxiliary
    data) to predict a sensitive attribute; evaluate it on training records (the victims).

    Parameters: `attribute` (None: every sensitive attribute, the worst counts), `use_features` (also give the
    attack the record's other features and its label, as an imputation adversary knows them; the baseline is then
    the same classifier on those alone), `classifier` (`gradient_boosting` or `logistic`), `samples` (auxiliary and
    victim records each; None: the profile's membership budget), `min_group_size` (attribute values with fewer
    auxiliary records are left out: the attack cannot learn them and their recall is noise).

    Balanced accuracy is used because sensitive groups are usually unbalanced: always guessing the majority scores
    a high plain accuracy but exactly 1/k balanced accuracy. The advantage's interval is a paired bootstrap over
    victims (attack and baseline judged on the same resampled records), stratified by group.
    """

    name = "attribute_inference"
    risk = "attribute_inference"
    metrics = _METRICS
    needs = frozenset({"sensitive", "scores"})
    defaults = {"attribute": None, "use_features": False, "classifier": "gradient_boosting", "samples": None,
                "min_group_size": 20}
    parameter_constraints = {
        "attribute": OptionalOf(Text()),
        "use_features": Boolean(),
        "classifier": Options(frozenset({"gradient_boosting", "logistic"})),
        "samples": OptionalOf(Interval(Integral, 20, None)),
        "min_group_size": Interval(Integral, 2, None),
    }

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data = ctx.data
        if not data.sensitive_holdout:
            return AttackResult({}, not_applicable="the data spec names no sensitive attribute")
        attrs = [p["attribute"]] if p["attribute"] else list(data.sensitive_holdout)
        unknown = [a for a in attrs if a not in data.sensitive_holdout]
        if unknown:
            return AttackResult({}, not_applicable=f"'{unknown[0]}' is not a sensitive attribute of the data spec")

        rng = np.random.default_rng(ctx.seed)
        budget = p["samples"] or ctx.profile.mia_samples
        i_aux = np.sort(rng.choice(len(data.x_holdout), min(budget, len(data.x_holdout)), replace=False))
        i_vic = np.sort(rng.choice(len(data.x_train), min(budget, len(data.x_train)), replace=False))
        x_aux, y_aux = data.x_holdout[i_aux], data.y_holdout[i_aux]
        x_vic, y_vic = data.x_train[i_vic], data.y_train[i_vic]
        out_aux = log_probabilities(logits(ctx.model.module, x_aux))
        out_vic = log_probabilities(logits(ctx.model.module, x_vic))
        if p["use_features"]:
            known_aux = _known(x_aux, y_aux, data.n_classes)
            known_vic = _known(x_vic, y_vic, data.n_classes)
            attack_aux, attack_vic = np.hstack([out_aux, known_aux]), np.hstack([out_vic, known_vic])
        else:
            attack_aux, attack_vic = out_aux, out_vic

        by_attr, measured = {}, {}
        for i, attr in enumerate(attrs):
            groups_aux = data.sensitive_holdout[attr][i_aux]
            groups_vic = data.sensitive_train[attr][i_vic]
            names, counts = np.unique(groups_aux, return_counts=True)
            kept = [str(g) for g, c in zip(names, counts) if c >= p["min_group_size"]]
            small = [str(g) for g, c in zip(names, counts) if c < p["min_group_size"]]
            code = {g: j for j, g in enumerate(kept)}
            keep_aux = np.isin(groups_aux, kept)
            keep_vic = np.isin(groups_vic, kept)
            if len(kept) < 2 or len(np.unique(groups_vic[keep_vic])) < 2:
                by_attr[attr] = {"note": f"fewer than two {attr} groups with at least {p['min_group_size']} records",
                                 "excluded_small_groups": small}
                continue
            g_aux = np.array([code[g] for g in groups_aux[keep_aux]], dtype=np.int64)
            g_vic = np.array([code[g] for g in groups_vic[keep_vic]], dtype=np.int64)
            k = len(kept)
            pred = _fit_predict(p["classifier"], ctx.seed, attack_aux[keep_aux], g_aux, attack_vic[keep_vic])
            if p["use_features"]:
                base = _fit_predict(p["classifier"], ctx.seed, known_aux[keep_aux], g_aux, known_vic[keep_vic])
                baseline_kind = "the same classifier on the other features and the label (imputation)"
            else:
                # Without model output the best balanced accuracy is 1/k: any constant guess, e.g. the majority.
                base = np.full(len(g_vic), int(np.bincount(g_aux, minlength=k).argmax()), dtype=np.int64)
                baseline_kind = "the majority group of the auxiliary records (the prior)"
            ba_attack = balanced_accuracy(g_vic, pred, k)
            ba_base = balanced_accuracy(g_vic, base, k)
            sample = {"group": g_vic, "attack": pred, "baseline": base}
            samples = {m: PairedSample(i_vic[keep_vic], sample, partial(_sample_statistic, metric=m, n_groups=k), g_vic)
                       for m in _METRICS}  # resampled within each group
            ci_attack, ci_adv = (sample_ci(samples[m], reps=ctx.profile.bootstrap_reps, seed=ctx.seed + 2 * i + j,
                                           confidence=ctx.confidence) for j, m in enumerate(_METRICS))
            per_group = [
                {"group": g, "victims": int((g_vic == j).sum()), "auxiliary": int((g_aux == j).sum()),
                 "attack_recall": _recall(g_vic, pred, j), "baseline_recall": _recall(g_vic, base, j)}
                for g, j in code.items()
            ]
            by_attr[attr] = {"balanced_accuracy": ba_attack, "baseline_balanced_accuracy": ba_base,
                             "advantage_over_prior": ba_attack - ba_base, "groups": per_group,
                             "excluded_small_groups": small, "n_victims": int(len(g_vic)),
                             "n_auxiliary": int(len(g_aux)), "baseline": baseline_kind}
            measured[attr] = {
                "balanced_accuracy": Measurement(ba_attack, _around(ci_attack, ba_attack), int(len(g_vic)),
                                                 paired=samples["balanced_accuracy"], ci_method=_CI_METHOD),
                "advantage_over_prior": Measurement(ba_attack - ba_base, _around(ci_adv, ba_attack - ba_base),
                                                    int(len(g_vic)), paired=samples["advantage_over_prior"],
                                                    ci_method=_CI_METHOD),
            }
            if ctx.progress:
                ctx.progress((i + 1) / len(attrs))

        if not measured:
            return AttackResult({}, {"by_attribute": by_attr},
                                not_applicable=f"no sensitive attribute has two groups of at least {p['min_group_size']} records")
        metrics, worst = {}, {}
        for m in _METRICS:
            pick = max(measured, key=lambda a: measured[a][m].value)
            metrics[m], worst[m] = measured[pick][m], pick
        details = {"attribute": worst["advantage_over_prior"], "worst_attribute": worst, "by_attribute": by_attr,
                   "classifier": p["classifier"], "use_features": bool(p["use_features"]),
                   "attack_inputs": "model log-probabilities" + (", features and label" if p["use_features"] else ""),
                   "n_auxiliary": int(len(i_aux)), "n_victims": int(len(i_vic))}
        return AttackResult(metrics, details)


def _known(x: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """What an imputation adversary knows of a record apart from the attribute: its features and one-hot label."""
    return np.hstack([x.reshape(len(x), -1).astype(np.float64), np.eye(n_classes)[y]])


def _recall(g: np.ndarray, pred: np.ndarray, j: int) -> float | None:
    mask = g == j
    return float((pred[mask] == j).mean()) if mask.any() else None


_CI_METHOD = f"{CI_BOOTSTRAP}, widened to contain the estimate"


def _around(ci: tuple[float, float], value: float) -> tuple[float, float] | None:
    """The percentile interval, widened to contain the point estimate (a skewed bootstrap can leave it out)."""
    if not all(np.isfinite(ci)):
        return None
    return (min(ci[0], value), max(ci[1], value))
