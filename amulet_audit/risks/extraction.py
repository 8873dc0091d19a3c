"""Model extraction through the prediction API (Tramèr et al., USENIX Security 2016; Jagielski et al., USENIX
Security 2020): an adversary spends a query budget, trains a surrogate on the answers and is measured by how
often the surrogate agrees with the model (fidelity) and how accurate it is, on holdout records it never queried.
"""

from __future__ import annotations

import math
from numbers import Integral

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, MetricSpec, rate
from amulet_audit.core.params import Interval, OptionalOf, Options
from amulet_audit.core.stats import binomial_ci
from amulet_audit.training.estimators import fit_estimator_copy, fits_copies

FIDELITY = MetricSpec(
    "fidelity", "Share of unseen holdout records on which the extracted surrogate predicts the same class as the model.",
    higher_is_worse=True, kind="rate", unit="fraction",
)
SURROGATE_ACCURACY = MetricSpec(
    "surrogate_accuracy", "Accuracy of the extracted surrogate on unseen holdout records.", higher_is_worse=True, kind="rate",
    unit="fraction",
)

# The surrogate trains for at least this many optimiser steps, so small budgets are not under-trained.
MIN_STEPS = 300


def soft_train(module, x: np.ndarray, targets: np.ndarray, recipe, *, seed: int, epochs: int, output: str = "logits"):
    """Train `module` in place on soft labels: cross-entropy to the target distribution `targets` (n, classes),
    i.e. KL divergence to the model's answers up to a constant (Hinton et al., 2015, distillation at T = 1). One-hot
    targets give ordinary cross-entropy. Mini-batches and optimiser follow the data spec's `recipe`
    (`training.loop.train_loop` with `soft=True`). `output`: the convention of `module`'s raw output, whose
    log-probabilities the loss reads (`training.loop.soft_loss`). Returns the module in eval mode."""
    from amulet_audit.training.loop import train_loop

    return train_loop(module, x, targets, recipe, seed=seed, epochs=epochs, output=output, soft=True)


def synthetic_queries(pool: np.ndarray, m: int, bounds, rng) -> tuple[np.ndarray, str]:
    """`m` synthetic inputs: uniform in the input range when known, else per-feature Gaussians fitted on `pool`."""
    shape = pool.shape[1:]
    if bounds is not None:
        return rng.uniform(bounds[0], bounds[1], (m, *shape)).astype(np.float32), "uniform in input_range"
    flat = pool.reshape(len(pool), -1)
    mu, sd = flat.mean(axis=0), flat.std(axis=0)
    return (rng.normal(mu, sd, (m, flat.shape[1])).reshape(m, *shape).astype(np.float32),
            "per-feature Gaussian fitted on holdout records")


class Extraction(Attack):
    """A surrogate of the audited architecture (a fresh copy, as the adversary's best guess) trained on the answers
    to `queries` queries: `access: probabilities` trains on the returned class probabilities, `access: labels` on
    the returned labels. Queries are holdout records (`source: holdout`) or synthetic inputs (`source: synthetic`).
    Holdout records are split: at most half are the query pool, the rest (never queried) measure the surrogate.
    The budget curve repeats the attack at halvings of the budget."""

    name = "extraction"
    risk = "model_extraction"
    metrics = ("fidelity", "surrogate_accuracy")
    # scores with `access: probabilities` (needs_for); the surrogate is a trained copy of the architecture where the
    # model allows one, else (a label-only model) a small MLP of the adversary's own
    needs = frozenset()
    budgets = {"quick": {"queries": 1000}, "standard": {"queries": 5000}, "thorough": {"queries": 20000}}
    defaults = {"access": "probabilities", "queries": None, "source": "holdout", "epochs": None}
    parameter_constraints = {
        "access": Options(frozenset({"labels", "probabilities"})),
        "queries": OptionalOf(Interval(Integral, 10, None)),
        "source": Options(frozenset({"holdout", "synthetic"})),
        "epochs": OptionalOf(Interval(Integral, 1, 10_000)),
    }

    def needs_for(self, params):
        return self.needs | ({"scores"} if params["access"] == "probabilities" else set())

    def instead(self, params):
        return ("`access: labels` measures extraction from the predicted labels only" if params["access"] == "probabilities"
                else "")

    def uses_copies(self, params, model):
        # the surrogate is a trained copy of the architecture wherever the model allows one (`_copyable`)
        from amulet_audit.core.component import model_capabilities

        return "trained_copies" in model_capabilities(model)

    def _run(self, ctx: AttackContext) -> AttackResult:
        from amulet_audit.ops.forward import logits

        p = self.get_params()
        data = ctx.data
        n_hold = len(data.x_holdout)
        if n_hold < 20:
            return AttackResult({}, {}, f"extraction needs at least 20 holdout records; the data has {n_hold}")
        rng = np.random.default_rng(ctx.seed)
        order = rng.permutation(n_hold)
        n_eval = min(n_hold // 2, ctx.profile.eval_samples * 2)
        eval_idx, pool_idx = np.sort(order[:n_eval]), order[n_eval:]
        asked = int(p["queries"] or self.budget(ctx.profile, "queries"))
        if p["source"] == "holdout":
            budget = min(asked, len(pool_idx))
            queries = data.x_holdout[pool_idx[:budget]]
            source = "holdout records"
        else:
            budget = asked
            queries, source = synthetic_queries(data.x_holdout[pool_idx], budget, data.input_range, rng)

        z = logits(ctx.model.module, queries)
        if p["access"] == "labels":
            answers = np.eye(data.n_classes, dtype=np.float32)[z.argmax(1)]
        else:
            e = np.exp(z - z.max(1, keepdims=True))
            answers = (e / e.sum(1, keepdims=True)).astype(np.float32)
        x_eval, y_eval = data.x_holdout[eval_idx], data.y_holdout[eval_idx]
        target_eval = logits(ctx.model.module, x_eval).argmax(1)

        budgets = sorted({max(10, int(budget / 2 ** k)) for k in range(ctx.profile.curve_points)} | {budget})
        budgets = [b for b in budgets if b <= budget][-ctx.profile.curve_points:]
        curve, final = [], None
        for i, b in enumerate(budgets):
            surrogate = self._surrogate(ctx, p, queries[:b], answers[:b])
            pred = logits(surrogate, x_eval).argmax(1)
            k_fid, k_acc, n = int((pred == target_eval).sum()), int((pred == y_eval).sum()), len(pred)
            curve.append({"queries": b, "fidelity": k_fid / n, "ci": list(binomial_ci(k_fid, n, ctx.confidence)),
                          "surrogate_accuracy": k_acc / n, "n": n})
            final = pred
            if ctx.progress:
                ctx.progress((i + 1) / len(budgets))
        metrics = {
            "fidelity": rate(final == target_eval, eval_idx, confidence=ctx.confidence),
            "surrogate_accuracy": rate(final == y_eval, eval_idx, confidence=ctx.confidence),
        }
        details = {
            "access": p["access"], "source": source, "queries": budget, "queries_requested": asked,
            "surrogate": self._surrogate_kind(ctx), "n_eval": n,
            "target_accuracy": float((target_eval == y_eval).mean()), "curve": curve,
        }
        if budget < asked:
            details["warnings"] = [f"Only {budget} holdout records were available as queries ({asked} requested); "
                                   "the extraction risk at the requested budget may be higher."]
        return AttackResult(metrics, details)

    @staticmethod
    def _copyable(ctx: AttackContext) -> bool:
        from amulet_audit.core.component import model_capabilities

        return "trained_copies" in model_capabilities(ctx.model)

    def _surrogate_kind(self, ctx: AttackContext) -> str:
        if self._copyable(ctx) and fits_copies(ctx.model):
            return ("a clone of the audited estimator (sklearn.base.clone) fitted on the queries and the labels the "
                    "model answered (the argmax of its probabilities)")
        if self._copyable(ctx):
            return "fresh copy of the audited architecture"
        why = ("returns labels only" if ctx.model.output == "labels"
               else "offers no trainable copies of its architecture")
        return (f"an MLP ({_MLP_HIDDEN} hidden ReLU units) of the adversary's own: the audited model {why}, so no "
                "copy of its architecture can be trained")

    def _surrogate(self, ctx: AttackContext, p: dict, x: np.ndarray, answers: np.ndarray):
        """The surrogate trained on (x, answers), returning per-class scores (a copy of the architecture, read
        through the model's output convention, or the adversary's own MLP for a label-only model)."""
        recipe = ctx.data.spec.training
        steps_per_epoch = math.ceil(len(x) / recipe.batch_size)
        epochs = int(p["epochs"] or max(recipe.epochs, math.ceil(MIN_STEPS / steps_per_epoch)))
        if self._copyable(ctx) and fits_copies(ctx.model):  # a clone of the estimator, fitted on the answers' labels
            return fit_estimator_copy(ctx.model, x, answers.argmax(1), seed=ctx.seed + 1, cache=ctx.cache)
        if self._copyable(ctx):
            module, output, arch = ctx.model.fresh_copy(ctx.seed + 1), ctx.model.output, ctx.model.architecture_digest()
        else:
            module, output, arch = _mlp(int(np.prod(x.shape[1:])), answers.shape[1], ctx.seed + 1), "logits", "mlp"

        def fit(mod):
            return soft_train(mod, x, answers, recipe, seed=ctx.seed, epochs=epochs, output=output)

        if ctx.cache is None:
            trained = fit(module)
        else:
            from amulet_audit.training.cache import content_key

            key = content_key("extraction-surrogate", arch, ctx.seed, recipe.model_dump(), epochs, x, answers)
            trained = ctx.cache.get_or_train(key, module, fit)
        from amulet_audit.core.device import placed
        from amulet_audit.core.outputs import scores_module

        return placed(scores_module(trained, output))


_MLP_HIDDEN = 64


def _mlp(d: int, classes: int, seed: int):
    """The adversary's own surrogate when the audited architecture cannot be trained: Flatten, Linear(d, 64), ReLU,
    Linear(64, classes), initialised from `seed`."""
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, _MLP_HIDDEN), torch.nn.ReLU(),
                               torch.nn.Linear(_MLP_HIDDEN, classes))
