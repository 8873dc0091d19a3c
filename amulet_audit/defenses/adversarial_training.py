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
    needs = frozenset({"trained_copies"})
    defaults = {"eps": 0.1, "norm": "linf", "steps": 7, "epochs": None}
    parameter_constraints = {
        "eps": Interval(Real, 0, None, closed="neither"),
        "norm": Options(frozenset({"linf", "l2"})),
        "steps": Interval(Integral, 1, 1000),
        "epochs": OptionalOf(Interval(Integral, 1, None)),
    }
    policy_params = {"eps": ("evasion", "eps"), "norm": ("evasion", "norm")}

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        """A fresh copy trained on the PGD adversarial examples of each mini-batch (Madry et al., ICLR 2018):
        `training.loop.train_loop` whose per-batch transform replaces the batch by PGD examples (`eps`, `norm`,
        `steps` steps of 2.5 * eps / steps, clipped to the data's input range) crafted in eval mode against the
        copy's current weights, with the loss of the model's output convention. Returns per-class scores."""
        from amulet_audit.training.copies import scored
        from amulet_audit.training.loop import train_loop
        from amulet_audit.training.cache import ModelCache, content_key

        p = self.get_params()
        epochs = p["epochs"] or recipe.epochs
        step_size = 2.5 * p["eps"] / p["steps"]
        bounds = ctx.data.input_range

        def train(module):
            scores = scored(ctx.model, module)  # per-class scores of the copy (same parameters): what PGD attacks

            def adversarial(xb, yb, gen):
                return pgd_examples(scores, xb, yb, eps=p["eps"], norm=p["norm"], steps=p["steps"],
                                    step_size=step_size, bounds=bounds, gen=gen)

            def progress(epoch, total):
                if ctx.progress:
                    ctx.progress(epoch / total)

            return train_loop(module, x, y, recipe, seed=seed, epochs=epochs, output=ctx.model.output,
                              transform=adversarial, on_epoch=progress)

        key = content_key("adversarial_training", ctx.model.architecture_digest(), seed, recipe.model_dump(), p, x, y)
        trained = (ctx.cache or ModelCache(None)).get_or_train(key, ctx.model.fresh_copy(seed), train)
        return scored(ctx.model, trained)  # per-class scores, as the audited model's module

    def evidence(self, ctx, module):
        p = self.get_params()
        return {**p, "epochs": p["epochs"] or ctx.data.spec.training.epochs, "step_size": 2.5 * p["eps"] / p["steps"]}
