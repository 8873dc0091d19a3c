"""Fairness mitigation with Fairlearn's reductions approach (Agarwal et al., ICML 2018).

`ExponentiatedGradient` searches for a randomised mixture of classifiers that satisfies a fairness
constraint (demographic parity or equalized odds) on the training data. Each classifier is a fresh copy of
the audited architecture trained with the data spec's recipe on re-weighted records (our scikit-learn-style
wrapper honours `sample_weight`). The mixture is itself a torch module (its output is the log of the
weighted average of the members' probabilities), so every attack runs on it unchanged; it does not need the
sensitive attribute at prediction time. An attack that re-trains the defended model (poisoning) gets a mitigated
copy too: the mitigation runs again on the altered records, with their sensitive attributes.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from amulet_audit.core.defense import Defense, DefenseContext, DefenseNotApplicable, DefenseOutcome
from amulet_audit.core.mode import set_mode
from amulet_audit.core.params import Interval, OptionalOf, Options, Text
from amulet_audit.training.copies import train_copy


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
        return train_copy(self.ctx.model, x, y, self.recipe, seed=self.seed + self.trained, cache=self.ctx.cache,
                                         sample_weight=w)


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


class FairnessMitigation(Defense):
    name = "fairness_mitigation"
    intended = ("discrimination",)
    description = "Fairness mitigation (Fairlearn ExponentiatedGradient)"
    defaults = {"constraint": "demographic_parity", "attribute": None, "eps": 0.02, "max_iter": None}
    parameter_constraints = {
        "constraint": Options(frozenset({"demographic_parity", "equalized_odds"})),
        "attribute": OptionalOf(Text()),
        "eps": Interval(Real, 0, 1, closed="neither"),
        "max_iter": OptionalOf(Interval(Integral, 1, 200)),
    }

    def _setup(self, data) -> tuple[dict, str]:
        """The parameters and the attribute mitigated for; DefenseNotApplicable when it cannot apply."""
        p = self.get_params()
        if not data.sensitive_train:
            raise DefenseNotApplicable("the data spec names no sensitive attribute to mitigate for")
        if data.n_classes != 2:
            raise DefenseNotApplicable("ExponentiatedGradient supports binary classification only")
        attribute = p["attribute"] or next(iter(data.sensitive_train))
        if attribute not in data.sensitive_train:
            raise DefenseNotApplicable(f"'{attribute}' is not a sensitive attribute of the data spec")
        return p, attribute

    def _max_iter(self, ctx: DefenseContext) -> int:
        return self.get_params()["max_iter"] or {"quick": 5, "standard": 10}.get(ctx.profile.name, 30)

    def apply(self, ctx: DefenseContext) -> DefenseOutcome:
        self._setup(ctx.data)  # refuse before any training
        return super().apply(ctx)

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        """The mixture ExponentiatedGradient finds on (x, y) with the records' sensitive attribute (`ctx.sensitive`:
        the training split's for the defended model, the poisoned records' for an attack's re-trained copy)."""
        from fairlearn.reductions import DemographicParity, EqualizedOdds, ExponentiatedGradient

        p, attribute = self._setup(ctx.data)
        if not ctx.sensitive or attribute not in ctx.sensitive or len(ctx.sensitive[attribute]) != len(x):
            raise ValueError(f"fairness mitigation needs the '{attribute}' attribute of each of the {len(x)} records "
                             "it trains on; the caller of train_copy must pass them as `sensitive`")
        constraint = DemographicParity() if p["constraint"] == "demographic_parity" else EqualizedOdds()
        trainer = _Trainer(ctx, recipe, seed)
        mitigator = ExponentiatedGradient(_TorchClassifier(trainer), constraints=constraint, eps=p["eps"],
                                          max_iter=self._max_iter(ctx))
        mitigator.fit(x.reshape(len(x), -1), y, sensitive_features=ctx.sensitive[attribute])
        weights = np.asarray(mitigator.weights_, dtype=float)
        keep = weights > 1e-6
        members = [est.module_ for est, k in zip(mitigator.predictors_, keep) if k]
        module = mixture_module(members, weights[keep] / weights[keep].sum())
        module.models_trained = trainer.trained
        return module

    def evidence(self, ctx: DefenseContext, module) -> dict:
        p, attribute = self._setup(ctx.data)
        return {"algorithm": "ExponentiatedGradient", "constraint": p["constraint"], "attribute": attribute,
                "constraint_slack": p["eps"], "max_iter": self._max_iter(ctx), "models_trained": module.models_trained,
                "mixture_size": len(module.members), "needs_sensitive_attribute_at_prediction": False}
