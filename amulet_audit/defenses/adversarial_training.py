"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018): each mini-batch is replaced by its PGD adversarial examples at the policy's evasion budget."""

from __future__ import annotations

from numbers import Integral, Real

from amulet_audit.core.defense import Defense, DefenseContext
from amulet_audit.core.params import Interval, OptionalOf, Options
from amulet_audit.ops.perturb import pgd_examples


class AdversarialTraining(Defense):
    name = "adversarial_training"
    intended = ("evasion",)
    description = "PGD adversarial training (Madry et al.)"
    needs = frozenset({"trained_copies", "gradients"})  # a tree ensemble (scikit-learn, LightGBM) has none
    stage = "batch"
    defaults = {"eps": 0.1, "norm": "linf", "steps": 7, "epochs": None}
    parameter_constraints = {
        "eps": Interval(Real, 0, None, closed="neither"),
        "norm": Options(frozenset({"linf", "l2"})),
        "steps": Interval(Integral, 1, 1000),
        "epochs": OptionalOf(Interval(Integral, 1, None)),
    }
    policy_params = {"eps": ("evasion", "eps"), "norm": ("evasion", "norm")}

    def instead(self, params):
        """Why the gradients are needed (follows the reason a model without gradients gives)."""
        return "adversarial training takes PGD steps along the gradients of the loss with respect to the inputs"

    def cost(self, profile) -> float:
        return float(self.get_params()["steps"] + 1)  # each batch: `steps` PGD steps, then the training step

    def batch_transform(self, ctx: DefenseContext):
        """The per-batch transform of adversarial training, for any copy: `for_model(raw)` (a copy's raw-output
        module, as it trains) -> f(xb, yb, gen) -> the PGD adversarial examples of the batch (`eps`, `norm`,
        `steps` steps of 2.5 * eps / steps, clipped to the data's input range) against the copy's current weights,
        crafted in eval mode with the loss of the model's output convention. `for_model.key`: what identifies it
        in a cache key."""
        from amulet_audit.core.mode import set_mode
        from amulet_audit.training.copies import scored

        p = self.get_params()
        step_size = 2.5 * p["eps"] / p["steps"]
        bounds = ctx.data.input_range

        def for_model(raw):
            scores = scored(ctx.model, raw)  # per-class scores of the copy (same parameters): what PGD attacks

            def adversarial(xb, yb, gen):
                training = raw.training
                set_mode(raw, False)
                try:
                    return pgd_examples(scores, xb, yb, eps=p["eps"], norm=p["norm"], steps=p["steps"],
                                        step_size=step_size, bounds=bounds, gen=gen)
                finally:
                    set_mode(raw, training)

            return adversarial

        for_model.key = {self.name: p}
        return for_model

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        return self.fit_with(ctx, x, y, recipe, seed)

    def fit_with(self, ctx: DefenseContext, x, y, recipe, seed, *, sample_weight=None, transform=None):
        """A fresh copy trained on the PGD adversarial examples of each mini-batch (Madry et al., ICLR 2018):
        `training.loop.train_loop` whose per-batch transform (`batch_transform`) replaces the batch by its PGD
        examples against the copy's current weights, with the loss of the model's output convention, weighted
        when `sample_weight` (shape (n,)) is handed down. Combined with a defense that owns the optimizer (DP-SGD,
        `ctx.inner`), the transform is handed to it instead. Returns per-class scores."""
        from amulet_audit.training.cache import ModelCache, content_key
        from amulet_audit.training.copies import scored
        from amulet_audit.training.loop import train_loop

        if transform is not None:
            return super().fit_with(ctx, x, y, recipe, seed, transform=transform)
        self._delegated = ctx.inner is not None  # the procedure inside it sets the schedule (e.g. DP-SGD's)
        if self._delegated:
            return ctx.inner(ctx, x, y, recipe, seed, sample_weight=sample_weight, transform=self.batch_transform(ctx))
        p = self.get_params()
        epochs = p["epochs"] or recipe.epochs
        for_model = self.batch_transform(ctx)

        def train(module):
            def progress(epoch, total):
                if ctx.progress:
                    ctx.progress(epoch / total)

            return train_loop(module, x, y, recipe, seed=seed, epochs=epochs, output=ctx.model.output,
                              sample_weight=sample_weight, transform=for_model(module), on_epoch=progress)

        weights = () if sample_weight is None else (sample_weight,)  # unweighted keys as before
        key = content_key("adversarial_training", ctx.model.architecture_digest(), seed, recipe.model_dump(), p, x, y,
                          *weights)
        trained = (ctx.cache or ModelCache(None)).get_or_train(key, ctx.model.fresh_copy(seed), train)
        return scored(ctx.model, trained)  # per-class scores, as the audited model's module

    def evidence(self, ctx, module):
        p = self.get_params()
        epochs = ("those of the procedure inside it" if getattr(self, "_delegated", False)
                  else p["epochs"] or ctx.data.spec.training.epochs)
        return {**p, "epochs": epochs, "step_size": 2.5 * p["eps"] / p["steps"]}
