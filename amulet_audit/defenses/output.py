"""Defenses against model extraction that change what the model reveals or carries.

- `output_perturbation`: the API returns only the top-1 label, or probabilities rounded to a few decimals
  (Tramèr et al., USENIX Security 2016, studied both as countermeasures to extraction).
- `watermarking`: a trigger set of out-of-distribution inputs with chosen labels is embedded in training, so
  ownership can later be verified from trigger accuracy (Adi et al., USENIX Security 2018).
"""

from __future__ import annotations

import dataclasses
from numbers import Integral

import numpy as np

from amulet_audit.core.defense import Defense, DefenseContext
from amulet_audit.core.mode import set_mode
from amulet_audit.training.copies import plain_model, train_inner
from amulet_audit.core.params import Interval, Options


def perturbed_outputs(module, mode: str, decimals: int):
    """Wrap `module` so its outputs are log-probabilities of the top-1 label only, or of rounded probabilities."""
    import torch

    class Perturbed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            probs = torch.softmax(self.inner(x), dim=1)
            if mode == "labels":
                probs = torch.nn.functional.one_hot(probs.argmax(1), probs.shape[1]).to(probs.dtype)
            else:
                scale = 10.0 ** decimals
                probs = torch.round(probs * scale) / scale
            probs = probs.clamp_min(10.0 ** -(decimals + 2))
            return torch.log(probs / probs.sum(1, keepdim=True))

    return set_mode(Perturbed(), False)  # the wrapped model may be an exported graph, whose mode is fixed


class OutputPerturbation(Defense):
    name = "output_perturbation"
    intended = ("model_extraction",)
    description = "Output perturbation (top-1 labels or rounded probabilities)"
    trains_copies = False  # wraps the audited model
    stage = "output"
    defaults = {"mode": "round", "decimals": 1}
    parameter_constraints = {"mode": Options(frozenset({"labels", "round"})), "decimals": Interval(Integral, 0, 6)}

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        p = self.get_params()
        # combined: wrap the model the defenses inside this one trained
        inner = train_inner(ctx, x, y, recipe, seed) if ctx.inner is not None else plain_model(ctx, x, y, recipe, seed)
        return perturbed_outputs(inner, p["mode"], p["decimals"])

    def evidence(self, ctx, module):
        return {**self.get_params(), "note": "Gradients through rounded or top-1 outputs vanish: evasion results on this "
                "model can be gradient-masked and overstate robustness."}


class Watermarking(Defense):
    name = "watermarking"
    intended = ("model_extraction",)
    description = "Watermarking (trigger set embedded in training)"
    needs = frozenset({"trained_copies"})
    stage = "data"
    defaults = {"triggers": 20, "repeat": 10}  # a small trigger set, seen often enough for a small model to learn it
    parameter_constraints = {"triggers": Interval(Integral, 1, 10_000), "repeat": Interval(Integral, 1, 100)}

    def _triggers(self, ctx: DefenseContext) -> tuple[np.ndarray, np.ndarray]:
        p, data = self.get_params(), ctx.data
        rng = np.random.default_rng(ctx.seed + 7919)
        shape = data.x_train.shape[1:]
        if data.input_range is not None:
            lo, hi = data.input_range
            triggers = rng.uniform(lo, hi, size=(p["triggers"], *shape)).astype(np.float32)
        else:  # standardised features: points far outside the data, where the labels are arbitrary
            triggers = (rng.standard_normal((p["triggers"], *shape)) * 3).astype(np.float32)
        return triggers, rng.integers(0, data.n_classes, p["triggers"])

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        repeat = self.get_params()["repeat"]
        triggers, labels = self._triggers(ctx)
        # the trigger records have no sensitive attributes: a procedure inside this one that needs them refuses
        return train_inner(dataclasses.replace(ctx, sensitive=None), np.concatenate([x] + [triggers] * repeat),
                           np.concatenate([y] + [labels] * repeat), recipe, seed)

    def evidence(self, ctx, module):
        from amulet_audit.ops.forward import predict

        triggers, labels = self._triggers(ctx)
        return {**self.get_params(), "trigger_accuracy": float((predict(module, triggers) == labels).mean()),
                "trigger_accuracy_of_audited_model": float((predict(ctx.model.module, triggers) == labels).mean()),
                "chance": 1.0 / ctx.data.n_classes}
