"""Fairness mitigation with Fairlearn's reductions approach (Agarwal et al., ICML 2018).

`ExponentiatedGradient` searches for a randomised mixture of classifiers that satisfies a fairness
constraint (demographic parity or equalized odds) on the training data. Each classifier is a fresh copy of
the audited architecture trained with the data spec's recipe on re-weighted records (our scikit-learn-style
wrapper honours `sample_weight`). The mixture is itself a torch module (its output is the log of the
weighted average of the members' probabilities), so every attack runs on it unchanged; it does not need the
sensitive attribute at prediction time. An attack that re-trains the defended model (poisoning) gets a mitigated
copy too: the mitigation runs again on the altered records, with their sensitive attributes.

It mitigates for one sensitive attribute (or an intersection of several): the one the policy names, else the one
the audit's discrimination requirements found worst on the audited model (`FairnessMitigation.baseline_params`);
an attribute with fewer than two groups of the minimum size is never used. The details say which and why.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from amulet_audit.core.defense import Defense, DefenseContext, DefenseNotApplicable, DefenseOutcome
from amulet_audit.core.mode import set_mode
from amulet_audit.core.params import Interval, OptionalOf, Options, Text
from amulet_audit.training.copies import train_inner


def mixture_module(members, weights):
    """log(sum_i w_i softmax(f_i(x))): the expected prediction of a randomised classifier, as a module."""
    import torch

    class Mixture(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.members = torch.nn.ModuleList(members)
            self.register_buffer("weights", torch.as_tensor(np.asarray(weights, dtype=np.float32)))

        def forward(self, x):
            probs = torch.stack([torch.softmax(m(x), dim=1) for m in self.members])
            return torch.log((self.weights.view(-1, 1, 1) * probs).sum(0).clamp_min(1e-12))

    return set_mode(Mixture(), False)  # members may be exported graphs, whose mode is fixed


class _Trainer:
    """Shared by every clone of the estimator: scikit-learn's `clone` deep-copies parameters, and this one must
    not be copied (it holds the audit's inputs and counts the members trained, which seeds each one)."""

    def __init__(self, ctx, recipe, seed: int):
        self.ctx, self.recipe, self.seed = ctx, recipe, seed
        self.trained = 0

    def __deepcopy__(self, memo):
        return self

    def fit(self, x: np.ndarray, y: np.ndarray, w: np.ndarray | None):
        self.trained += 1
        return train_inner(self.ctx, x, y, self.recipe, self.seed + self.trained, sample_weight=w)


class _TorchClassifier:
    """The scikit-learn estimator protocol over our torch training (`fit` honours `sample_weight`)."""

    def __init__(self, trainer=None):
        self.trainer = trainer

    def get_params(self, deep=True):
        return {"trainer": self.trainer}

    def set_params(self, **params):
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _shape(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float32).reshape(-1, *self.trainer.ctx.data.x_train.shape[1:])

    def fit(self, X, y, sample_weight=None):
        w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float32)
        self.module_ = self.trainer.fit(self._shape(X), np.asarray(y, dtype=np.int64), w)
        return self

    def predict(self, X):
        from amulet_audit.ops.forward import predict

        return predict(self.module_, self._shape(X))


# How the discrimination measurement names an intersection of sensitive attributes ("sex × race").
INTERSECTION = " × "


def _components(attribute: str) -> list[str]:
    """The sensitive attributes an attribute name stands for: itself, or each part of an intersection."""
    return attribute.split(INTERSECTION)


def _labels(sensitive: dict[str, np.ndarray], attribute: str) -> np.ndarray:
    """Group label per record (str, shape (n,)) of `attribute`, an attribute or an intersection of several."""
    if attribute in sensitive:
        return np.asarray(sensitive[attribute]).astype(str)
    parts = [np.asarray(sensitive[a]).astype(str) for a in _components(attribute)]
    return np.array([INTERSECTION.join(v) for v in zip(*parts)], dtype=str)


def _too_few_groups(labels: np.ndarray, min_group_size: int) -> str:
    """Why these labels give no two groups to compare ("has a single group", ...), or "" when they do."""
    values, counts = np.unique(labels, return_counts=True)
    if len(values) < 2:
        return "has a single group"
    if (counts >= min_group_size).sum() < 2:
        return f"has fewer than two groups of at least {min_group_size} training records"
    return ""


class _Finding:
    """Constraint of the `finding` parameter: a mapping naming at least the attribute found worst."""

    def check(self, v) -> bool:
        return isinstance(v, dict) and isinstance(v.get("attribute"), str) and bool(v["attribute"])

    def __str__(self) -> str:
        return "a mapping with the attribute the audit found worst ({'attribute': ..., 'requirement': ..., ...})"


class FairnessMitigation(Defense):
    name = "fairness_mitigation"
    intended = ("discrimination",)
    description = "Fairness mitigation (Fairlearn ExponentiatedGradient)"
    needs = frozenset({"sensitive", "trained_copies"})
    stage = "reweight"
    # ExponentiatedGradient iterations when `max_iter` is None
    budgets = {"quick": {"max_iter": 5}, "standard": {"max_iter": 10}, "thorough": {"max_iter": 30}}
    defaults = {"constraint": "demographic_parity", "attribute": None, "eps": 0.02, "max_iter": None,
                "min_group_size": 30, "finding": None}
    parameter_constraints = {
        "constraint": Options(frozenset({"demographic_parity", "equalized_odds"})),
        "attribute": OptionalOf(Text()),
        "eps": Interval(Real, 0, 1, closed="neither"),
        "max_iter": OptionalOf(Interval(Integral, 1, 200)),
        "min_group_size": Interval(Integral, 1, None),
        "finding": OptionalOf(_Finding()),
    }
    # the discrimination measurement's smallest compared group, so both agree on which attributes have groups
    policy_params = {"min_group_size": ("discrimination", "min_group_size")}
    # the risks whose findings on the audited model `baseline_params` reads (the runner waits for those jobs only)
    baseline_risks = ("discrimination",)

    @classmethod
    def baseline_params(cls, findings: list[dict]) -> dict:
        """`finding`: the attribute the audit's discrimination requirements found worst on the audited model.

        The runner calls this with the baseline evaluation's requirements (each a dict: id, risk, metric, value,
        verdict, details of its run) before it applies the defense. Route: the plan fills what the policy states
        (`policy_params`) before anything is measured, and defense units may run in parallel processes, so only
        the runner knows what the baseline found; it evaluates the audited model first when a policy's defense
        declares `baseline_params`, and passes the finding as a plain parameter (recorded with the defense's
        parameters in results.json). Of the discrimination requirements with a value, the first failing one
        counts (else the first indeterminate, else the first); its attribute is the one its run found worst for
        its metric (`worst_attribute`, e.g. "sex", or an intersection "sex × race"). Empty when none has one."""
        rank = {"fail": 0, "indeterminate": 1, "pass": 2}
        candidates = [f for f in findings if f.get("risk") == "discrimination" and f.get("value") is not None
                      and ((f.get("details") or {}).get("worst_attribute") or {}).get(f.get("metric"))]
        if not candidates:
            return {}
        f = min(candidates, key=lambda f: rank.get(str(f.get("verdict")), 3))  # min keeps policy order among equals
        return {"finding": {"requirement": f["id"], "metric": f["metric"], "value": float(f["value"]),
                            "verdict": str(f["verdict"]), "attribute": f["details"]["worst_attribute"][f["metric"]]}}

    def _setup(self, data) -> tuple[dict, str, str]:
        """The parameters, the attribute mitigated for and why it was chosen (one sentence).

        The attribute is the one the policy names (`attribute`), else the one the audit found worst (`finding`),
        else the first sensitive attribute of the data spec that has groups to compare. An attribute may be an
        intersection ("sex × race"): its groups are the combinations of the component attributes. An attribute
        with fewer than two groups of at least `min_group_size` training records is never used (there is no
        disparity between groups to mitigate; a constraint on one group is vacuous).

        Raises DefenseNotApplicable (one sentence) when no attribute qualifies."""
        p = self.get_params()
        if not data.sensitive_train:
            raise DefenseNotApplicable("the data spec names no sensitive attribute to mitigate for")
        if data.n_classes != 2:
            raise DefenseNotApplicable("ExponentiatedGradient supports binary classification only")
        m = p["min_group_size"]
        if p["attribute"]:
            attribute, why = p["attribute"], "named by the policy (the defense's `attribute` parameter)"
        elif p["finding"]:
            f = p["finding"]
            attribute = f["attribute"]
            why = (f"the attribute requirement '{f.get('requirement', '?')}' found worst on the audited model "
                   f"({f.get('metric', '?')} {f.get('value', float('nan')):.3f}, {f.get('verdict', '?')})")
        else:
            eligible = [a for a in data.sensitive_train if not _too_few_groups(_labels(data.sensitive_train, a), m)]
            if not eligible:
                raise DefenseNotApplicable(f"no sensitive attribute has two groups of at least {m} training records")
            attribute = eligible[0]
            why = ("no discrimination requirement found a worst attribute: the first sensitive attribute of the data "
                   f"spec with two groups of at least {m} training records")
        if any(a not in data.sensitive_train for a in _components(attribute)):
            raise DefenseNotApplicable(f"'{attribute}' is not a sensitive attribute of the data spec")
        problem = _too_few_groups(_labels(data.sensitive_train, attribute), m)
        if problem:
            raise DefenseNotApplicable(f"'{attribute}' {problem}")
        return p, attribute, why

    def cost(self, profile) -> float:
        return float(self._max_iter(profile) + 1)  # a copy per iteration

    def _max_iter(self, profile) -> int:
        return self.get_params()["max_iter"] or self.budget(profile, "max_iter")

    def _apply(self, ctx: DefenseContext) -> DefenseOutcome:
        self._setup(ctx.data)  # refuse before any training
        return super()._apply(ctx)

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        """The mixture ExponentiatedGradient finds on (x, y) with the records' sensitive attribute (`ctx.sensitive`:
        the training split's for the defended model, the poisoned records' for an attack's re-trained copy)."""
        from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

        p, attribute, _ = self._setup(ctx.data)
        if not ctx.sensitive or any(a not in ctx.sensitive or len(ctx.sensitive[a]) != len(x)
                                    for a in _components(attribute)):
            raise ValueError(f"fairness mitigation needs the '{attribute}' attribute of each of the {len(x)} records "
                             "it trains on; the caller of train_copy must pass them as `sensitive`")
        constraint = DemographicParity() if p["constraint"] == "demographic_parity" else EqualizedOdds()
        trainer = _Trainer(ctx, recipe, seed)
        mitigator = ExponentiatedGradient(_TorchClassifier(trainer), constraints=constraint, eps=p["eps"],
                                          max_iter=self._max_iter(ctx.profile))
        mitigator.fit(x.reshape(len(x), -1), y, sensitive_features=_labels(ctx.sensitive, attribute))
        weights = np.asarray(mitigator.weights_, dtype=float)
        keep = weights > 1e-6
        members = [est.module_ for est, k in zip(mitigator.predictors_, keep) if k]
        module = mixture_module(members, weights[keep] / weights[keep].sum())
        module.models_trained = trainer.trained
        return module

    def evidence(self, ctx: DefenseContext, module) -> dict:
        p, attribute, why = self._setup(ctx.data)
        while not hasattr(module, "members") and hasattr(module, "inner"):  # combined: inside an output wrapper
            module = module.inner
        labels, counts = np.unique(_labels(ctx.data.sensitive_train, attribute), return_counts=True)
        return {"algorithm": "ExponentiatedGradient", "constraint": p["constraint"], "attribute": attribute,
                "attribute_basis": why, "groups": {str(g): int(c) for g, c in zip(labels, counts)},
                "constraint_slack": p["eps"], "max_iter": self._max_iter(ctx.profile), "models_trained": module.models_trained,
                "mixture_size": len(module.members), "needs_sensitive_attribute_at_prediction": False}
