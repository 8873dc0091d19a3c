"""DP-SGD (Abadi et al., CCS 2016) with Opacus: per-example clipping, Gaussian noise, RDP accounting.

Opacus supplies the DP optimizer (clipping, noise, scaling), the noise calibration for a target epsilon
(`get_noise_multiplier`, the same calibration `make_private_with_epsilon` performs) and the RDP accountant.
Per-example gradients come from `torch.func` (as Opacus's functorch mode computes them) because the default
model format, TorchScript, cannot carry the module hooks Opacus's GradSampleModule relies on; where the model
cannot be called functionally with its training-mode behaviour (a scripted GroupNorm the converter refuses, a
scripted Dropout, which the converted graph runs in eval mode), they come from a loop over the batch, one backward
pass per record, on the copy itself in training mode. Batches are Poisson-sampled, as the accountant assumes.
The trained weights are loaded back into a plain copy of the audited architecture before any attack runs on it.

Only layers whose training output for one record depends on other records are refused, as Opacus refuses them:
BatchNorm (batch statistics: per-example gradients do not exist) and InstanceNorm tracking running statistics
(statistics over every record, released without noise). Where the architecture is a Python class (`--arch`, or
a trusted pickle), `replace_batchnorm: true` swaps BatchNorm for GroupNorm with Opacus's `ModuleValidator.fix`;
the defended model's architecture then differs from the audited one, and the evidence says so.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real

from amulet_audit.core.component import model_phrase
from amulet_audit.core.defense import Defense, DefenseContext, DefenseNotApplicable
from amulet_audit.core.mode import set_mode
from amulet_audit.core.params import Boolean, Interval, OptionalOf
from amulet_audit.inputs.model import layers


# Rényi orders for the accountant: Opacus's defaults stop at 63, which is not enough for small epsilons with
# few steps (its "optimal order is the largest alpha" warning); a wider range gives the tighter bound.
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [80, 96, 128, 192, 256, 384, 512, 1024]
ROUTES = ("torch.func.vmap", "a loop over the batch")  # how per-example gradients were computed


def refused_layers(module) -> list[str]:
    """"Kind at path" (e.g. "BatchNorm1d at 1") for each layer Opacus refuses for DP-SGD: BatchNorm, whose output
    for a record in training depends on the whole batch, and InstanceNorm tracking running statistics. Works for
    nn.Modules, TorchScript and torch.export programs (`inputs.model.layers`)."""
    buffers = {name for name, _ in module.named_buffers()}
    return [f"{kind} at {path}" for path, kind in layers(module)
            if "BatchNorm" in kind or ("InstanceNorm" in kind and f"{path}.running_mean" in buffers)]


def _loaded(model):
    """The model as loaded (inside any wrapper the handle adds), whose layers copies are made of."""
    return getattr(model, "arch_module", model.module)


def _without_batchnorm(module):
    """A copy of `module` (an nn.Module) that Opacus accepts: BatchNorm replaced by GroupNorm and InstanceNorm
    without running statistics, by Opacus's `ModuleValidator.fix` (GroupNorm with gcd(32, C) groups). A BatchNorm1d
    usually sees features without spatial extent, (N, C), where a group of one channel would normalise a single
    value to zero; it gets groups of at least 8 channels (gcd(32, C // 8) groups, one group below 16 channels)."""
    import copy
    import math

    import torch
    from opacus.validators import ModuleValidator

    fixed = copy.deepcopy(module)
    for name, sub in list(fixed.named_modules()):
        if isinstance(sub, torch.nn.BatchNorm1d):
            parent, _, leaf = name.rpartition(".")
            groups = math.gcd(32, max(1, sub.num_features // 8))
            setattr(fixed.get_submodule(parent), leaf, torch.nn.GroupNorm(groups, sub.num_features, affine=sub.affine))
    return ModuleValidator.fix(fixed)


def _per_example_route(model, seed: int, example):
    """(route, params, buffers, per_example, raw) for a re-initialised copy of `model` (a ModelHandle):
    `per_example(x, y)` gives each record's gradient of the loss (name -> tensor (B, *param.shape)) at the current
    `params` (leaf tensors, the ones the optimizer steps), with the copy in training mode where its format allows;
    `raw`: a module computing the copy's raw output at the current `params`.
    torch.func's vmap when the copy can be called functionally as it trains, else a loop over the batch."""
    import torch
    from torch.func import functional_call, grad, vmap

    from amulet_audit.core.device import current, to_device
    from amulet_audit.training.loop import batch_loss

    loss = batch_loss(model.output)  # the loss the model's output convention trains with
    func = model.functional_copy(seed, example)  # None for a scripted Dropout, which must train in training mode
    if func is not None:  # the weights (and the batches train_loop hands over) are on the audit's device
        func.module.to(current())
        params = {k: to_device(v.clone()).requires_grad_(True) for k, v in func.params.items()}
        buffers = {k: to_device(v) for k, v in func.buffers.items()}

        def loss_one(prm, xi, yi):
            return loss(functional_call(func.module, {**prm, **buffers}, (xi.unsqueeze(0),)), yi.unsqueeze(0))

        # randomness="different": each record draws its own Dropout mask, as one-at-a-time training would
        vectorised = vmap(grad(loss_one), in_dims=(None, 0, 0), randomness="different")
        return (ROUTES[0], params, buffers,
                lambda xb, yb: vectorised({k: v.detach() for k, v in params.items()}, xb, yb),
                _at_current_weights(func.module, params, buffers))

    copy = model.fresh_copy(seed).to(current())  # train mode (exported programs keep the mode fixed at export)
    params = dict(copy.named_parameters())

    def per_example(xb, yb):
        rows = [torch.autograd.grad(loss(copy(xb[i:i + 1]), yb[i:i + 1]), list(params.values()))
                for i in range(len(xb))]
        return {k: torch.stack([row[j] for row in rows]) for j, k in enumerate(params)}

    return ROUTES[1], params, dict(copy.named_buffers()), per_example, copy


def _at_current_weights(module, params: dict, buffers: dict):
    """`module` called functionally at the current `params` (the leaf tensors the DP optimizer steps, detached) and
    `buffers`, as a module: the raw output that another procedure in a combination (adversarial examples per batch)
    reads while DP-SGD trains. Switching its mode switches `module`'s."""
    import torch
    from torch.func import functional_call

    class AtCurrentWeights(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = module

        def forward(self, x):
            return functional_call(self.inner, {**{k: v.detach() for k, v in params.items()}, **buffers}, (x,))

    return AtCurrentWeights()


class DPSGD(Defense):
    name = "dp_sgd"
    intended = ("membership_inference", "attribute_inference", "data_reconstruction")
    description = "Differentially private training (DP-SGD via Opacus)"
    needs = frozenset({"trained_copies", "gradients"})  # a tree ensemble (scikit-learn, LightGBM) has none
    stage = "optimizer"
    # epochs when `epochs` is None: the recipe's, capped at `epoch_cap` (None: no cap)
    budgets = {"quick": {"epoch_cap": 10}, "standard": {"epoch_cap": 20}, "thorough": {"epoch_cap": None}}
    # epochs / batch_size None: the recipe's, with batches of at least 256 and at most 10 (quick) or 20 (standard)
    # epochs: DP-SGD trains best with large batches and few epochs, and costs one per-example gradient per record.
    # replace_batchnorm: swap BatchNorm for GroupNorm (Opacus ModuleValidator.fix) where the architecture is a class
    defaults = {"epsilon": 3.0, "delta": None, "max_grad_norm": 1.0, "epochs": None, "batch_size": None,
                "replace_batchnorm": False}
    parameter_constraints = {
        "replace_batchnorm": Boolean(),
        "epsilon": Interval(Real, 0, None, closed="neither"),
        "delta": OptionalOf(Interval(Real, 0, 1, closed="neither")),
        "max_grad_norm": Interval(Real, 0, None, closed="neither"),
        "epochs": OptionalOf(Interval(Integral, 1, None)),
        "batch_size": OptionalOf(Interval(Integral, 1, None)),
    }

    def instead(self, params):
        """Why the gradients are needed (follows the reason a model without gradients gives)."""
        return "DP-SGD clips and noises the per-example gradients of a differentiable model"

    def _schedule(self, ctx: DefenseContext, n: int, recipe) -> dict:
        """Privacy parameters for n training records: delta, epochs, sampling rate, steps, noise multiplier."""
        from opacus.accountants.utils import get_noise_multiplier

        p = self.get_params()
        delta = p["delta"] if p["delta"] is not None else 1.0 / (10 * n)  # well below 1/n, as is customary
        cap = self.budget(ctx.profile, "epoch_cap") or recipe.epochs
        epochs = p["epochs"] or min(recipe.epochs, cap)
        q = min(1.0, (p["batch_size"] or max(recipe.batch_size, 256)) / n)
        steps = max(1, int(round(epochs / q)))
        with warnings.catch_warnings():  # the search tries tiny noise levels, where any order range is too short
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(target_epsilon=p["epsilon"], target_delta=delta, sample_rate=q, steps=steps,
                                         accountant="rdp", alphas=ALPHAS)
        return {"delta": delta, "epochs": epochs, "sample_rate": q, "steps": steps, "noise_multiplier": float(sigma)}

    def _trainable(self, model):
        """(the model DP-SGD trains copies of, the architecture change made or ""); DefenseNotApplicable when
        Opacus refuses a layer and it cannot or may not be replaced."""
        import dataclasses

        refused = refused_layers(_loaded(model))
        if not refused:
            return model, ""
        causes = [c for kind, c in (("BatchNorm", "BatchNorm mixes the records of a batch"),
                                    ("InstanceNorm", "running statistics are not private")) if any(kind in r for r in refused)]
        why = f"DP-SGD needs per-example gradients, and Opacus refuses {', '.join(refused[:5])} ({'; '.join(causes)})"
        python_class = model.format in ("state_dict", "pickle")
        if not self.get_params()["replace_batchnorm"]:
            raise DefenseNotApplicable(why + ("; set the dp_sgd parameter replace_batchnorm: true to train it with "
                                              "GroupNorm instead" if python_class else
                                              "; a GroupNorm version of the model (or its state_dict with --arch "
                                              "and replace_batchnorm: true) can be trained with DP-SGD"))
        if not python_class:
            raise DefenseNotApplicable(why + f"; replace_batchnorm needs the architecture as a Python class (a "
                                             f"state_dict with --arch), and {model_phrase(model.format)}'s layers cannot "
                                             "be swapped")
        fixed = _without_batchnorm(_loaded(model))
        left = refused_layers(fixed)
        if left:
            raise DefenseNotApplicable(why + f"; Opacus's replacement left {', '.join(left[:5])}")
        subs = dict(fixed.named_modules())

        def now(path: str) -> str:
            sub = subs.get(path)
            return (f"GroupNorm({sub.num_groups}, {sub.num_channels})" if hasattr(sub, "num_groups")
                    else f"{type(sub).__name__} without running statistics")

        change = ("; ".join(f"{r} -> {now(r.rsplit(' at ', 1)[1])}" for r in refused)
                  + " (Opacus's replacement): the defended architecture differs from the audited one")
        swap = {"raw": fixed} if getattr(model, "raw", None) is not None else {"module": fixed}
        return dataclasses.replace(model, **swap, architecture=f"{model.architecture} (BatchNorm -> GroupNorm)"), change

    def fit(self, ctx: DefenseContext, x_np, y_np, recipe, seed):
        return self.fit_with(ctx, x_np, y_np, recipe, seed)

    def fit_with(self, ctx: DefenseContext, x_np, y_np, recipe, seed, *, sample_weight=None, transform=None):
        """A fresh copy trained with DP-SGD (Abadi et al., CCS 2016): `training.loop.train_loop` over `steps`
        Poisson-sampled batches (sampling rate q), each record's gradient (`_per_example_route`) clipped to
        `max_grad_norm` and Gaussian noise of `noise_multiplier * max_grad_norm` added by Opacus's DPOptimizer
        around the recipe's optimizer, both drawing from the seed's generator; the RDP accountant's epsilon at
        `delta` is recorded. Cached by content. Returns per-class scores, as the audited model's module.

        Combined with adversarial training, `transform` (see `Defense.fit_with`) replaces each sampled batch by
        its adversarial examples against the copy's current weights before the per-example gradients are taken:
        the privacy accounting is unchanged, since each record's clipped gradient still depends on that record
        alone. Weighted records (`sample_weight`) are refused: the accountant's sensitivity assumes every record
        contributes one clipped gradient."""
        if sample_weight is not None:
            raise DefenseNotApplicable("DP-SGD cannot train on weighted records (as the defense around it in the "
                                       "combination asks): its privacy accounting assumes each record contributes one "
                                       "clipped gradient")
        import torch
        from opacus.accountants import RDPAccountant
        from opacus.optimizers import DPOptimizer

        from amulet_audit.core.device import current, generator
        from amulet_audit.training.loop import make_optimizer, poisson, train_loop
        from amulet_audit.training.cache import ModelCache, content_key

        p = self.get_params()
        x = torch.tensor(x_np, dtype=torch.float32)
        n = len(x)
        sched = self._schedule(ctx, n, recipe)
        self._sched, self._n = sched, n  # what ran, for the evidence (fewer records when a defense around it selected)
        q, steps, sigma = sched["sample_rate"], sched["steps"], sched["noise_multiplier"]
        model, self._change = self._trainable(ctx.model)
        combined = () if transform is None else (transform.key,)  # alone: keys as before
        key = content_key("dp_sgd", model.architecture_digest(), seed, recipe.model_dump(), p, sched, x_np, y_np,
                          *combined)
        cache = ctx.cache or ModelCache(None)
        copy = model.fresh_copy(seed)
        state = cache.load(key)
        if state is None:
            route, params, buffers, per_example, raw = _per_example_route(model, seed, x[:8])

            def dp_optimizer(prm, gen):
                optimizer = DPOptimizer(make_optimizer(prm, recipe), noise_multiplier=sigma,
                                        max_grad_norm=p["max_grad_norm"], expected_batch_size=max(1, int(round(q * n))))
                # noise drawn from the audit's seed: reproducible (on a GPU from its own generator, seeded the same:
                # Opacus draws the noise where the gradients are)
                optimizer.generator = gen if gen.device == torch.device(current()) else generator(seed)
                return optimizer

            def per_example_gradients(xb, yb):
                if len(xb) == 0:  # an empty Poisson batch still counts as a step: clipped sum 0, noise only
                    grads = {k: torch.zeros((1, *v.shape), device=v.device) for k, v in params.items()}
                else:
                    grads = per_example(xb, yb)
                for k, v in params.items():
                    v.grad_sample = grads[k]

            accountant = RDPAccountant()

            def account(step):
                accountant.step(noise_multiplier=sigma, sample_rate=q)
                if ctx.progress and step % 20 == 0:
                    ctx.progress(step / steps)

            # one pass of `steps` Poisson-sampled batches; the route's per-example gradients feed the DP optimizer
            train_loop(None, x_np, y_np, recipe, seed=seed, epochs=1, batches=poisson(q, steps),
                       gradients=per_example_gradients, optimizer=dp_optimizer, params=list(params.values()),
                       on_step=account, transform=None if transform is None else transform(raw))
            state = {**{k: v.detach() for k, v in params.items()}, **buffers,
                     "__spent_epsilon__": torch.tensor(accountant.get_epsilon(sched["delta"], alphas=ALPHAS)),
                     "__route__": torch.tensor(ROUTES.index(route))}
            cache.save(key, state)
        self._spent = float(state["__spent_epsilon__"])
        self._route = ROUTES[int(state["__route__"])]
        copy.load_state_dict({k: v for k, v in state.items() if not k.startswith("__")})
        from amulet_audit.training.copies import scored

        return scored(model, set_mode(copy, False))  # per-class scores, as the audited model's module

    def evidence(self, ctx, module):
        p = self.get_params()
        out = {"architecture_change": self._change} if self._change else {}  # first: the report shows it first
        n_train = len(ctx.data.x_train)
        if getattr(self, "_n", n_train) < n_train:  # combined inside a defense that selected the records
            out["records"] = (f"trained on {self._n} of the {n_train} training records, as the defense around it "
                              "selected them; that selection looked at every record and is not covered by the privacy "
                              "guarantee")
        return {**out, "target_epsilon": p["epsilon"], "spent_epsilon": self._spent, "max_grad_norm": p["max_grad_norm"],
                **(getattr(self, "_sched", None) or self._schedule(ctx, n_train, ctx.data.spec.training)),
                "per_example_gradients": self._route}
