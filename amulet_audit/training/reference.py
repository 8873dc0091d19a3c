"""Reference models for membership inference: K re-initialised copies of the audited architecture, each
trained with the data spec's recipe on its own subset of a record pool (LiRA, Carlini et al. S&P 2022;
RMIA, Zarifzadeh et al. ICML 2024).

The K copies are trained together where the architecture allows it: their parameters are stacked
(`torch.func.stack_module_state`), one forward pass serves all of them (`torch.func.vmap` over
`torch.func.functional_call`; for a Linear/activation chain, batched matrix products with a hand-written
gradient; for any other Sequential of torch.nn layers, batched layer operations with grouped convolutions, see
`stacked.py`), and the recipe's optimizer runs on the stacked tensors with a step count per model. Each model
still sees exactly the batches the one-at-a-time trainer (`train_model`) would give it: its own permutation of
its own subset every epoch, from a generator seeded with its own seed.

BatchNorm normalises each model's batch with that model's own statistics and updates its own running buffers;
where models' batches differ in size (the end of an epoch), the models are run in groups of equal batch size, so
no padding row enters a batch statistic: the weights equal one-at-a-time training's. Dropout draws independently
for every model (from a generator seeded by the models' seeds), so its masks cannot be those of one-at-a-time
training, whose draws come from torch's global generator in another order: the trained models are equal in
distribution, not in value. TorchScript modules cannot be called functionally: a scripted Sequential of torch.nn
layers is rebuilt in eager mode (`training.scripted`), other scripted models are converted to an equivalent FX
graph (`ModelHandle.functional_copy`, without BatchNorm or Dropout), and the rest train one model at a time.

torch is imported inside the functions: the registry imports this module's users during `validate`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amulet_audit.inputs.data import TrainingRecipe
from amulet_audit.inputs.model import layer_kind
from amulet_audit.training.estimators import fits_copies, fitted_reference_models
from amulet_audit.training.scripted import eager_sequential
from amulet_audit.training.stacked import StackedChain, StackedLayers, linear_chain, sequential_layers
from amulet_audit.core.device import rng_devices
from amulet_audit.core.mode import set_mode
from amulet_audit.core.threads import all_cores, model_threads

_KEY_VERSION = "amulet-audit/reference-model/v1"
# Output conventions whose loss gradient the chain kernel writes out (`StackedChain.gradient`).
CHAIN_OUTPUTS = ("logits", "single_logit")


@dataclass
class ReferenceModels:
    """K trained reference models. `masks[k]` marks the pool records model k trained on.

    `details` says which trainer ran (`{"trainer": "vectorised"|"sequential", "reason": ...}`) and how many
    models came from the cache."""

    masks: np.ndarray  # bool (K, n)
    details: dict[str, Any]
    _base: Any = None  # vectorised: the module whose forward is called with each model's tensors
    _stacked: dict[str, Any] = field(default_factory=dict)  # vectorised: name -> tensor (K, ...)
    _modules: list[Any] = field(default_factory=list)  # sequential: one trained module per model
    output: str = "logits"  # the models' output convention (`amulet_audit.core.outputs`), as the audited model's

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    def logits(self, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
        """Every model's per-class scores on `x` (logits, or log-probabilities read from the models' output
        convention, as the audited model's are read): float64, shape (K, n, classes)."""
        import torch

        from amulet_audit.core.device import current, placed, to_device
        from amulet_audit.core.outputs import scores_module

        if self._modules:  # trained one at a time
            scored = [placed(scores_module(m, self.output)) for m in self._modules]

            def forward(xb):
                return torch.stack([m(xb) for m in scored])
        else:
            vectorised = _vectorised_forward(self._base.to(current()), output=self.output)
            state = {name: to_device(t) for name, t in self._stacked.items()}

            def forward(xb):
                return vectorised(state, to_device(xb)).cpu()
        out = []
        with torch.no_grad():
            for start in range(0, len(x), batch_size):
                out.append(forward(torch.as_tensor(x[start:start + batch_size], dtype=torch.float32)).double().numpy())
        return np.concatenate(out, axis=1) if out else np.zeros((len(self), 0, 0))

    def state_dict(self, k: int) -> dict:
        """Model k's state dict (parameter and buffer name -> tensor)."""
        if self._modules:
            return self._modules[k].state_dict()
        return {name: t[k] for name, t in self._stacked.items()}


def half_masks(n: int, k: int, seed: int) -> np.ndarray:
    """(k, n) bool training masks in complementary pairs: model 2j trains on a random half of the n records,
    model 2j+1 on the other half, so with k even every record is IN for k/2 models and OUT for k/2 (Carlini
    et al. 2022 train each reference model on a random half of the pool). Pair j's half depends only on
    (seed, j), so the first models of a larger set equal a smaller set's and their cached weights are reused."""
    masks = np.zeros((k, n), dtype=bool)
    for j in range((k + 1) // 2):
        order = np.random.default_rng([seed, j]).permutation(n)
        half = np.zeros(n, dtype=bool)
        half[order[: n // 2]] = True
        masks[2 * j] = half
        if 2 * j + 1 < k:
            masks[2 * j + 1] = ~half
    return masks


def vectorisable(module) -> str:
    """Why `module` cannot be trained with its siblings in one vectorised loop ('' when it can)."""
    import torch

    if isinstance(module, torch.jit.ScriptModule):
        return ("TorchScript modules cannot be called with substituted parameters (torch.func.functional_call "
                "refuses jitted modules), and this one is neither a Sequential of torch.nn layers nor convertible to "
                "an FX graph that trains as it does, so each reference model was trained on its own")
    return ""


def batch_statistics(module) -> bool:
    """Whether `module` has a layer that normalises with batch statistics in training (BatchNorm): its stacked
    models must then run on batches without padding rows."""
    return any("BatchNorm" in layer_kind(sub) for sub in module.modules())


def train_reference_models(model, x: np.ndarray, y: np.ndarray, masks: np.ndarray, recipe: TrainingRecipe, *,
                           seed: int, cache=None, progress: Callable[[float], None] | None = None) -> ReferenceModels:
    """Train K re-initialised copies of `model`'s architecture; copy k (initialised with `fresh_copy(seed + k)`)
    trains on `x[masks[k]]`, `y[masks[k]]` with `recipe`, as `train_model(..., seed=seed + k)` would.

    Trained together in one vectorised loop when the architecture allows it, one at a time otherwise
    (`details["trainer"]` and `details["reason"]` say which and why). With a ModelCache, each model is stored
    under a hash of the architecture, its seed, the recipe, its mask and the data, and loaded on later calls.
    `progress(fraction)` is called as models finish. The audited model is never modified."""
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 2 or masks.shape[1] != len(x) or len(x) != len(y):
        raise ValueError(f"masks must have shape (K, {len(x)}) for {len(x)} records; got {masks.shape}")
    if (masks.sum(axis=1) == 0).any():
        raise ValueError("every reference model needs at least one training record")
    if fits_copies(model):  # a scikit-learn estimator: fitted clones, read through their log-probabilities
        fitted = fitted_reference_models(model, x, y, masks, seed=seed, cache=cache, progress=progress)
        return ReferenceModels(masks, fitted["details"], _modules=fitted["modules"], output="log_probabilities")
    k_models = masks.shape[0]
    arch = model.architecture_digest()
    data_digest = _digest(x, y)
    # Dropout draws for the models trained together depend on the set (its first seed and size): such a model is
    # cached as a member of its set, so that a set's numbers never depend on which other set was trained first
    members = (seed, k_models) if any(layer_kind(m).startswith("Dropout") and getattr(m, "p", 1) > 0
                                      for m in model.arch_module.modules()) else ()
    keys = [_model_key(arch, seed + k, recipe, masks[k], data_digest, *members) for k in range(k_models)]
    cached = [cache.load(key) if cache is not None else None for key in keys]
    todo = [k for k in range(k_models) if cached[k] is None]

    with model_threads(model.module):
        return _train(model, x, y, masks, recipe, seed=seed, cache=cache, progress=progress, keys=keys, cached=cached,
                      todo=todo)


def _train(model, x, y, masks, recipe, *, seed, cache, progress, keys, cached, todo) -> ReferenceModels:
    import torch

    k_models = masks.shape[0]
    copies = [model.fresh_copy(seed + k) for k in range(k_models)]
    # TorchScript refuses torch.func: a scripted Sequential is rebuilt in eager mode, other scripted models are
    # converted to an equivalent FX graph (their functional copy)
    example = torch.as_tensor(x[:8], dtype=torch.float32)
    eager = eager_sequential(model, seed, example)
    functional = model.functional_copy(seed, example) if eager is None else None
    base = eager if eager is not None else functional.module if functional is not None else copies[0]
    names = list(functional.params) if functional is not None else [n for n, _ in base.named_parameters()]
    reason = vectorisable(base)
    if not reason:
        reason = _probe(base, names, x[:2])
    # the chain's hand-written gradient is that of cross-entropy on logits or of BCE on a single logit; models of
    # other output conventions (a final Softmax, Sigmoid or LogSoftmax) train through autograd instead
    chain = None if reason or model.output not in CHAIN_OUTPUTS else linear_chain(base, names)
    if chain is not None and not _chain_agrees(chain, base, x[:4]):
        chain = None  # e.g. a Linear applied to every position of a 3-D input: batched matrix products do not fit
    layers = None if reason or chain is not None else sequential_layers(base, names)
    if layers is not None and not _layers_agree(layers, base, x[:4]):
        layers = None
    details: dict[str, Any] = {"trainer": "sequential" if reason else "vectorised", "reason": reason,
                               "n_models": k_models, "from_cache": k_models - len(todo)}
    if not reason:
        details["kernel"] = ("batched matrix products over the Linear/activation chain" if chain is not None
                             else "batched layer operations (grouped convolutions, per-model BatchNorm and Dropout)"
                             if layers is not None else "torch.func.vmap over functional_call")

    if reason:
        modules = []
        for k in range(k_models):
            module = copies[k]
            if cached[k] is not None:
                module.load_state_dict(cached[k])
                set_mode(module, False)
            else:
                from amulet_audit.training.loop import train_model

                with torch.random.fork_rng(devices=rng_devices()):  # its Dropout draws: from its own seed
                    torch.manual_seed(seed + k)
                    train_model(module, x[masks[k]], y[masks[k]], recipe, seed=seed + k, output=model.output)
                if cache is not None:
                    cache.save(keys[k], module.state_dict())
            modules.append(module)
            if progress:
                progress((k + 1) / k_models)
        return ReferenceModels(masks, details, _modules=modules, output=model.output)

    stacked: dict[str, torch.Tensor] = {}
    states = [c.state_dict() for c in copies]
    for name in states[0]:
        stacked[name] = torch.stack([s[name].detach() for s in states]).clone()
    for k in range(k_models):
        if cached[k] is not None:
            for name in stacked:
                stacked[name][k] = cached[k][name]
    if todo:
        sub = {name: t[todo].clone() for name, t in stacked.items()}
        # K convolutional models at once make every operation large: worth the threads this process may use
        spatial = any(layer_kind(m).startswith("Conv") for m in base.modules())
        with all_cores() if spatial else contextlib.nullcontext():
            details["threads"] = torch.get_num_threads()
            trained = _train_vectorised(base, names, sub, x, y, masks[todo], recipe, [seed + k for k in todo], chain,
                                        layers=layers, output=model.output,
                                        progress=(lambda f: progress(f * len(todo) / k_models)) if progress else None)
        for i, k in enumerate(todo):
            for name in stacked:
                stacked[name][k] = trained[name][i]
            if cache is not None:
                cache.save(keys[k], {name: t[k].clone() for name, t in stacked.items()})
    if progress:
        progress(1.0)
    set_mode(base, False)  # logits read running statistics, not the batch's (fixed-mode graphs keep theirs)
    return ReferenceModels(masks, details, _base=base, _stacked=stacked, output=model.output)


def _layers_agree(layers: StackedLayers, module, x: np.ndarray) -> bool:
    """Whether `layers`' batched forward gives the functional forward's outputs on `x` (two stacked copies): in eval
    mode, and in training mode (batch statistics) when the layers draw nothing at random."""
    import torch

    try:
        xb = torch.as_tensor(x, dtype=torch.float32)
        modes = (False,) if layers.random else (False, True)
        for training in modes:
            set_mode(module, training)
            state, mine = _two_copies(module), _two_copies(module)
            with torch.no_grad():
                want = _vectorised_forward(module)(state, xb)
                got = layers.forward(mine, xb.expand(2, *xb.shape), training=training)
            if got.shape != want.shape or not torch.allclose(got, want, atol=1e-5):
                return False
        return True
    except Exception:  # any failure means: use the functional path
        return False
    finally:
        set_mode(module, True)


def _digest(x: np.ndarray, y: np.ndarray) -> str:
    from amulet_audit.training.cache import content_key

    return content_key(np.ascontiguousarray(x), np.ascontiguousarray(y))


def _model_key(arch: str, seed: int, recipe: TrainingRecipe, mask: np.ndarray, data_digest: str, *members) -> str:
    from amulet_audit.training.cache import content_key

    return content_key(_KEY_VERSION, arch, seed, recipe.model_dump(), np.packbits(mask), len(mask), data_digest,
                       *members)


def _vectorised_forward(base, *, per_model_inputs: bool = False, output: str = "logits"):
    """f(stacked, x) -> (K, n, classes): every model's forward on the same inputs x (n, ...), or with
    `per_model_inputs` on its own inputs x[k] (x: (K, n, ...)). The raw outputs for `output` "logits" (and for
    training); per-class log-probabilities (`core.outputs.to_log_probabilities`) for any other convention."""
    from torch.func import functional_call, vmap

    from amulet_audit.core.outputs import to_log_probabilities

    def one(state, xb):
        out = functional_call(base, state, (xb,))
        return out if output == "logits" else to_log_probabilities(out, output)

    # Dropout in training: an independent draw for every model
    return vmap(one, in_dims=(0, 0 if per_model_inputs else None), randomness="different")


def _two_copies(module) -> dict:
    """`module`'s parameters and buffers stacked twice (name -> (2, ...) tensor): a probe for the stacked paths."""
    import torch

    return {n: torch.stack([t.detach(), t.detach()]) for n, t in module.state_dict().items()}


def _probe(module, param_names: list[str], x: np.ndarray) -> str:
    """'' if a vectorised forward and backward work for this module, else the reason they do not."""
    import torch

    try:
        state = _two_copies(module)
        for name in param_names:
            state[name].requires_grad_(True)
        with torch.random.fork_rng(devices=[]):  # a Dropout's draws must not move the global generator
            out = _vectorised_forward(module)(state, torch.as_tensor(x, dtype=torch.float32))
        out.sum().backward()
    except Exception as exc:  # any failure of the functional path means: train one at a time
        text = str(exc).strip().splitlines()
        return f"the vectorised forward failed for this architecture ({type(exc).__name__}: {text[0][:160] if text else ''})"
    return ""


def _chain_agrees(chain: StackedChain, module, x: np.ndarray) -> bool:
    """Whether `chain`'s batched forward gives the functional forward's outputs on `x` (two stacked copies)."""
    import torch

    try:
        state = _two_copies(module)
        xb = torch.as_tensor(x, dtype=torch.float32)
        with torch.no_grad():
            want = _vectorised_forward(module)(state, xb)
            got = chain.forward(state, xb.expand(2, *xb.shape))
        return got.shape == want.shape and bool(torch.allclose(got, want, atol=1e-5))
    except Exception:  # any failure means: use the functional path
        return False


def _train_vectorised(base, param_names: list[str], state: dict, x: np.ndarray, y: np.ndarray, masks: np.ndarray,
                      recipe: TrainingRecipe, seeds: list[int], chain: StackedChain | None, *,
                      layers: StackedLayers | None = None, output: str = "logits", progress=None) -> dict:
    """Mini-batch training of the stacked models in `state` (name -> (K, ...) tensors) with the loss of their
    output convention (`training.loop.loss_for(output)`: cross-entropy for logits): through `chain`'s hand-written
    gradient when the architecture is a Linear/activation chain (logits or a single logit only, CHAIN_OUTPUTS),
    else by autograd through `layers`' batched forward (a Sequential of torch.nn layers) or `torch.func.vmap`.

    Per epoch, model k draws `torch.randperm(n_k, generator=gen_k)` over its own n_k records and takes batches of
    `recipe.batch_size` (the last one shorter), exactly as `train_model` does (`loop.shuffled`); models with
    fewer records pad their batches with zero-weight rows and skip optimizer steps once their epoch is done. With
    BatchNorm (`batch_statistics`), padding rows would enter the batch statistics: a step whose models have batches
    of different sizes runs each group of equal size on its own rows. Dropout draws, independently for every
    model, from one generator seeded with (seeds[0], K) (`layers`), or from torch's global generator under that
    seed (vmap; restored afterwards). All parameters live in one (K, P) tensor, so the optimizer runs a handful of
    operations per step whatever the number of layers. Inputs are gathered per step, so memory grows with K times
    the batch, not with K times the data."""
    import torch

    from amulet_audit.training.loop import loss_for

    with torch.random.fork_rng(devices=rng_devices()):
        torch.manual_seed(_dropout_seed(seeds))
        return _train_stacked(base, param_names, state, x, y, masks, recipe, seeds, chain, layers, output, progress,
                              loss_for(output))


def _dropout_seed(seeds: list[int]) -> int:
    """The seed of the stacked models' Dropout draws: a function of their seeds and number only."""
    return int(np.random.SeedSequence([int(seeds[0]), len(seeds), 0xD809]).generate_state(1)[0])


def _train_stacked(base, param_names, state, x, y, masks, recipe, seeds, chain, layers, output, progress, record_loss):
    import torch

    from amulet_audit.core.device import current, to_device

    if chain is not None and output not in CHAIN_OUTPUTS:
        raise ValueError(f"the chain kernel's gradient does not fit output {output!r}")
    k_models = masks.shape[0]
    bs = recipe.batch_size
    # the models' tensors and the data live on the audit's device; batch orders are drawn on the CPU and moved
    base.to(current())
    state = {n: to_device(t) for n, t in state.items()}
    xt = to_device(torch.as_tensor(x, dtype=torch.float32))
    yt = to_device(torch.as_tensor(y, dtype=torch.long))
    subsets = [torch.as_tensor(np.flatnonzero(m), dtype=torch.long) for m in masks]
    sizes = torch.tensor([len(s) for s in subsets])
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    steps = math.ceil(int(sizes.max()) / bs)
    width = steps * bs

    shapes = [state[n].shape[1:] for n in param_names]
    numels = [int(np.prod(sh, dtype=np.int64)) for sh in shapes]
    flat = torch.cat([state[n].reshape(k_models, -1) for n in param_names], dim=1).detach().clone().requires_grad_(True)
    buffers = {n: t for n, t in state.items() if n not in param_names}
    opt = _StackedOptimizer(flat, recipe, k_models)
    # the optimizer updates `flat` in place, so these views always hold the current parameters
    params = {n: t.view(k_models, *sh) for n, t, sh in zip(param_names, flat.detach().split(numels, dim=1), shapes)}
    if chain is not None:
        flat.grad = torch.zeros_like(flat)
        grads = {n: t.view(k_models, *sh) for n, t, sh in zip(param_names, flat.grad.split(numels, dim=1), shapes)}
    forward = _vectorised_forward(base, per_model_inputs=True)
    set_mode(base, True)  # an exported graph (TorchScript's functional copy) keeps its fixed mode
    exact_rows = layers.batch_statistics if layers is not None else batch_statistics(base)
    dropout_gen = torch.Generator().manual_seed(_dropout_seed(seeds)) if layers is not None and layers.random else None

    # per step: 0/1 row weights (K, bs), which models step, whether all do (the same every epoch), and the groups of
    # models run together: (all models, rows) when padding rows may enter the forward or every batch has `rows`
    # rows; else (models, rows) per batch size
    col = torch.arange(bs)
    plan = []
    for s in range(steps):
        weight = ((s * bs + col)[None, :] < sizes[:, None]).to(torch.float32)
        active = weight[:, 0] > 0
        rows = weight.sum(dim=1).long()
        if bool((rows == rows[0]).all()):
            groups = [(slice(None), int(rows[0]))]
        elif exact_rows:
            groups = [(torch.nonzero(rows == r).flatten(), int(r)) for r in torch.unique(rows) if int(r) > 0]
        else:
            groups = [(slice(None), bs)]
        # each model's loss is the mean over its real rows, as F.cross_entropy's default in train_model
        plan.append((to_device(weight / weight.sum(dim=1, keepdim=True).clamp_min(1.0)), to_device(active),
                     bool(active.all()), [(to_device(m) if isinstance(m, torch.Tensor) else m, r) for m, r in groups]))
    epochs = recipe.epochs
    for epoch in range(epochs):
        idx = torch.zeros((k_models, width), dtype=torch.long)  # model k's permuted subset, padded
        for k in range(k_models):
            order = torch.randperm(len(subsets[k]), generator=gens[k])
            idx[k, : len(order)] = subsets[k][order]
        idx = to_device(idx)
        for s, (row_scale, active, every, groups) in enumerate(plan):
            cols = idx[:, s * bs:(s + 1) * bs]
            if chain is not None:
                chain.gradient(params, grads, xt[cols], yt[cols], row_scale, output=output)
                opt.step(active, every)
                continue
            live = {n: t.view(k_models, *sh) for n, t, sh in zip(param_names, flat.split(numels, dim=1), shapes)}
            flat.grad = None
            for models, rows in groups:
                # all models: views, whose buffers the forward updates in place; some (an index tensor): copies,
                # written back
                part, scale = cols[models, :rows], row_scale[models, :rows]
                sub = ({**live, **buffers} if isinstance(models, slice) else
                       {n: t[models] for n, t in {**live, **buffers}.items()})
                xb, yb = xt[part], yt[part]
                out = layers.forward(sub, xb, training=True, gen=dropout_gen) if layers is not None else forward(sub, xb)
                ce = record_loss(out.reshape(len(part) * rows, -1), yb.reshape(-1))
                (ce.reshape(len(part), rows) * scale).sum().backward()
                if isinstance(models, torch.Tensor):
                    for n in buffers:
                        buffers[n][models] = sub[n]
            opt.step(active, every)
        if progress:
            progress((epoch + 1) / epochs)
    trained = dict(buffers)
    for n, t, sh in zip(param_names, flat.detach().split(numels, dim=1), shapes):
        trained[n] = t.reshape(k_models, *sh).clone()
    return {n: trained[n].cpu() for n in state}


class _StackedOptimizer:
    """torch.optim's Adam, AdamW and SGD (momentum, weight decay; no dampening or Nesterov) applied to the stacked
    parameters `flat` (K, P), with one step count per model: a model whose epoch has ended (`active[k]` False) is
    left untouched, optimizer state included. The settings (learning rate, betas, eps, weight decay, momentum) are
    those of the optimizer `training.loop.make_optimizer` builds for the recipe, so both trainers step alike;
    ValueError for a setting this optimizer does not implement (dampening, Nesterov, AMSGrad, maximize).

    Adam (Kingma & Ba 2015) with L2 weight decay: g += wd*p; m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
    p -= lr/(1-b1^t) * m / (sqrt(v)/sqrt(1-b2^t) + eps). AdamW (Loshchilov & Hutter 2019): p *= 1 - lr*wd, then
    the same step without the L2 term. SGD: g += wd*p; b = g at the first step, else b = mu*b + g; p -= lr*b."""

    def __init__(self, flat, recipe: TrainingRecipe, k_models: int):
        import torch

        from amulet_audit.training.loop import make_optimizer

        settings = make_optimizer([torch.zeros(1, requires_grad=True)], recipe).defaults
        unsupported = [k for k in ("dampening", "nesterov", "amsgrad", "maximize") if settings.get(k)]
        if unsupported:
            raise ValueError(f"the stacked optimizer does not implement {', '.join(unsupported)}")
        self.flat = flat
        self.kind = recipe.optimizer
        self.lr = settings["lr"]
        self.wd = settings["weight_decay"]
        self.momentum = settings.get("momentum", 0.0)
        self.betas, self.eps = settings.get("betas"), settings.get("eps")
        self.t = torch.zeros(k_models, 1, dtype=torch.float64, device=flat.device)
        self.m = torch.zeros_like(flat, requires_grad=False)
        self.v = torch.zeros_like(flat, requires_grad=False) if self.kind != "sgd" else None

    def step(self, active, every: bool) -> None:
        import torch

        self.t = self.t + active.to(torch.float64)[:, None]
        p, g = self.flat.detach(), self.flat.grad
        with torch.no_grad():
            if self.kind == "sgd":
                if self.wd != 0:
                    g = g.add(p, alpha=self.wd)
                if self.momentum != 0:
                    m = torch.where(self.t == 1.0, g, self.m * self.momentum + g)
                else:
                    m = g
                self._commit(p - self.lr * m, m, None, active, every)
                return
            b1, b2 = self.betas
            t = self.t.clamp_min(1.0)
            step_size = (self.lr / (1.0 - b1 ** t)).to(torch.float32)
            bc2_sqrt = torch.sqrt(1.0 - b2 ** t).to(torch.float32)
            if self.kind == "adamw":
                decayed = p * (1.0 - self.lr * self.wd)
            else:
                decayed = p
                if self.wd != 0:
                    g = g.add(p, alpha=self.wd)
            if every:  # the usual case: update in place, no temporaries beyond the denominator
                self.m.lerp_(g, 1.0 - b1)
                self.v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = self.v.sqrt().div_(bc2_sqrt).add_(self.eps)
                if self.kind == "adamw":
                    p.copy_(decayed)
                p.sub_(denom.reciprocal_().mul_(self.m).mul_(step_size))
                return
            m = self.m.lerp(g, 1.0 - b1)
            v = self.v.mul(b2).addcmul_(g, g, value=1.0 - b2)
            denom = (v.sqrt() / bc2_sqrt).add_(self.eps)
            self._commit(decayed - (m / denom) * step_size, m, v, active, every)

    def _commit(self, new_p, m, v, active, every: bool) -> None:
        import torch

        if not every:
            keep = active[:, None]
            new_p = torch.where(keep, new_p, self.flat.detach())
            m = torch.where(keep, m, self.m)
            v = torch.where(keep, v, self.v) if v is not None else None
        self.flat.data.copy_(new_p)
        self.m = m
        if v is not None:
            self.v = v
