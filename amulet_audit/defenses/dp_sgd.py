"""DP-SGD (Abadi et al., CCS 2016) with Opacus: per-example clipping, Gaussian noise, RDP accounting.

Opacus supplies the DP optimizer (clipping, noise, scaling), the noise calibration for a target epsilon
(`get_noise_multiplier`, the same calibration `make_private_with_epsilon` performs) and the RDP accountant.
Per-example gradients come from `torch.func` (as Opacus's functorch mode computes them) because the default
model format, TorchScript, cannot carry the module hooks Opacus's GradSampleModule relies on. Batches are
Poisson-sampled, as the accountant assumes. The trained weights are loaded back into a plain copy of the
audited architecture before any attack runs on it.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

from amulet_audit.core.defense import Defense, DefenseContext, DefenseNotApplicable
from amulet_audit.core.params import Interval, OptionalOf


# Rényi orders for the accountant: Opacus's defaults stop at 63, which is not enough for small epsilons with
# few steps (its "optimal order is the largest alpha" warning); a wider range gives the tighter bound.
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 96, 128, 192, 256, 384, 512, 1024]


class DPSGD(Defense):
    name = "dp_sgd"
    intended = ("membership_inference", "attribute_inference", "data_reconstruction")
    description = "Differentially private training (DP-SGD via Opacus)"
    # epochs / batch_size None: the recipe's, with batches of at least 256 and at most 10 (quick) or 20 (standard)
    # epochs: DP-SGD trains best with large batches and few epochs, and costs one per-example gradient per record.
    defaults = {"epsilon": 3.0, "delta": None, "max_grad_norm": 1.0, "epochs": None, "batch_size": None}
    parameter_constraints = {
        "epsilon": Interval(Real, 0, None, closed="neither"),
        "delta": OptionalOf(Interval(Real, 0, 1, closed="neither")),
        "max_grad_norm": Interval(Real, 0, None, closed="neither"),
        "epochs": OptionalOf(Interval(Integral, 1, None)),
        "batch_size": OptionalOf(Interval(Integral, 1, None)),
    }

    def _schedule(self, ctx: DefenseContext, n: int, recipe) -> dict:
        """Privacy parameters for n training records: delta, epochs, sampling rate, steps, noise multiplier."""
        from opacus.accountants.utils import get_noise_multiplier

        p = self.get_params()
        delta = p["delta"] if p["delta"] is not None else 1.0 / (10 * n)  # well below 1/n, as is customary
        cap = {"quick": 10, "standard": 20}.get(ctx.profile.name, recipe.epochs)
        epochs = p["epochs"] or min(recipe.epochs, cap)
        q = min(1.0, (p["batch_size"] or max(recipe.batch_size, 256)) / n)
        steps = max(1, int(round(epochs / q)))
        with warnings.catch_warnings():  # the search tries tiny noise levels, where any order range is too short
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(target_epsilon=p["epsilon"], target_delta=delta, sample_rate=q, steps=steps,
                                         accountant="rdp", alphas=ALPHAS)
        return {"delta": delta, "epochs": epochs, "sample_rate": q, "steps": steps, "noise_multiplier": float(sigma)}

    def fit(self, ctx: DefenseContext, x_np, y_np, recipe, seed):
        import torch
        import torch.nn.functional as F
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer
        from torch.func import functional_call, grad, vmap

        from amulet_audit.training.loop import make_optimizer
        from amulet_audit.training.cache import ModelCache, content_key

        p = self.get_params()
        x = torch.tensor(x_np, dtype=torch.float32)
        y = torch.tensor(y_np, dtype=torch.long)
        n = len(x)
        sched = self._schedule(ctx, n, recipe)
        q, steps, sigma = sched["sample_rate"], sched["steps"], sched["noise_multiplier"]
        func = ctx.model.functional_copy(seed, x[:8])
        if func is None:
            raise DefenseNotApplicable(
                "DP-SGD needs per-example gradients, which this architecture does not allow (e.g. BatchNorm mixes "
                "examples; GroupNorm does not)"
            )
        key = content_key("dp_sgd", ctx.model.architecture_digest(), seed, recipe.model_dump(), p, sched, x_np, y_np)
        cache = ctx.cache or ModelCache(None)
        copy = ctx.model.fresh_copy(seed)
        state = cache.load(key)
        if state is None:
            params = {k: v.clone().requires_grad_(True) for k, v in func.params.items()}
            buffers = func.buffers

            def loss_one(prm, xi, yi):
                return F.cross_entropy(functional_call(func.module, {**prm, **buffers}, (xi.unsqueeze(0),)), yi.unsqueeze(0))

            per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
            optimizer = DPOptimizer(make_optimizer(list(params.values()), recipe), noise_multiplier=sigma,
                                    max_grad_norm=p["max_grad_norm"], expected_batch_size=max(1, int(round(q * n))))
            gen = torch.Generator().manual_seed(seed)
            optimizer.generator = gen  # noise drawn from the audit's seed: reproducible
            accountant = RDPAccountant()
            for step in range(steps):
                idx = torch.nonzero(torch.rand(n, generator=gen) < q).flatten()
                if len(idx) == 0:  # an empty Poisson batch still counts as a step: clipped sum 0, noise only
                    grads = {k: torch.zeros((1, *v.shape)) for k, v in params.items()}
                else:
                    grads = per_example({k: v.detach() for k, v in params.items()}, x[idx], y[idx])
                for k, v in params.items():
                    v.grad_sample = grads[k]
                optimizer.step()
                optimizer.zero_grad()
                accountant.step(noise_multiplier=sigma, sample_rate=q)
                if ctx.progress and step % 20 == 0:
                    ctx.progress(step / steps)
            state = {**{k: v.detach() for k, v in params.items()}, **buffers,
                     "__spent_epsilon__": torch.tensor(accountant.get_epsilon(sched["delta"], alphas=ALPHAS))}
            cache.save(key, state)
        self._spent = float(state["__spent_epsilon__"])
        copy.load_state_dict({k: v for k, v in state.items() if k != "__spent_epsilon__"})
        return copy.eval()

    def evidence(self, ctx, module):
        p = self.get_params()
        return {"target_epsilon": p["epsilon"], "spent_epsilon": self._spent, "max_grad_norm": p["max_grad_norm"],
                **self._schedule(ctx, len(ctx.data.x_train), ctx.data.spec.training)}
