"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
ICLR 2018): each mini-batch is replaced by its PGD adversarial examples at the policy's evasion budget."""

from __future__ import annotations

from numbers import Integral, Real

from amulet_audit.core.defense import Defense, DefenseContext
from amulet_audit.core.mode import set_mode
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
        import torch

        from amulet_audit.training.copies import scored
        from amulet_audit.training.loop import batch_loss, make_optimizer
        from amulet_audit.training.cache import ModelCache, content_key

        p = self.get_params()
        epochs = p["epochs"] or recipe.epochs
        step_size = 2.5 * p["eps"] / p["steps"]
        bounds = ctx.data.input_range

        def train(module):
            gen = torch.Generator().manual_seed(seed)
            scores = scored(ctx.model, module)  # per-class scores of the copy (same parameters): what PGD attacks
            loss = batch_loss(ctx.model.output)  # the loss the model's output convention trains with
            xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.long)
            opt = make_optimizer(module.parameters(), recipe)
            for epoch in range(epochs):
                order = torch.randperm(len(xt), generator=gen)
                for start in range(0, len(xt), recipe.batch_size):
                    idx = order[start:start + recipe.batch_size]
                    set_mode(module, False)  # craft examples against the current weights without updating batch statistics
                    adv = pgd_examples(scores, xt[idx], yt[idx], eps=p["eps"], norm=p["norm"], steps=p["steps"],
                                       step_size=step_size, bounds=bounds, gen=gen)
                    set_mode(module, True)
                    opt.zero_grad(set_to_none=True)
                    loss(module(adv), yt[idx]).backward()
                    opt.step()
                if ctx.progress:
                    ctx.progress((epoch + 1) / epochs)
            return set_mode(module, False)

        key = content_key("adversarial_training", ctx.model.architecture_digest(), seed, recipe.model_dump(), p, x, y)
        trained = (ctx.cache or ModelCache(None)).get_or_train(key, ctx.model.fresh_copy(seed), train)
        return scored(ctx.model, trained)  # per-class scores, as the audited model's module

    def evidence(self, ctx, module):
        p = self.get_params()
        return {**p, "epochs": p["epochs"] or ctx.data.spec.training.epochs, "step_size": 2.5 * p["eps"] / p["steps"]}
