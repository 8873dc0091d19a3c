"""Training a copy of the audited architecture with the data spec's recipe: one mini-batch loop (`train_loop`)
with the loss of the model's output convention (hard labels, soft labels, per-record weights) and hooks for the
procedures that change one part of it (adversarial examples per batch, a DP optimizer fed per-example gradients,
Poisson-sampled batches, progress). Every copy the audit trains one model at a time goes through it: plain copies
(`train_model`), the extraction surrogate, adversarial training and DP-SGD. The vectorised reference trainer
(`training.reference`) trains K models at once with the same losses and optimizer settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from amulet_audit.core.mode import set_mode
from amulet_audit.inputs.data import TrainingRecipe


def make_optimizer(params, recipe: TrainingRecipe):
    """The recipe's torch.optim optimizer over `params`: SGD (momentum, L2 weight decay), AdamW (decoupled weight
    decay) or Adam (L2 weight decay), at the recipe's learning rate, torch's defaults otherwise."""
    import torch

    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def loss_for(convention: str = "logits"):
    """The per-record training loss (nats, shape (n,)) for a model whose raw output follows `convention`
    (`amulet_audit.core.outputs.CONVENTIONS`): f(out, y) with `out` the raw output and `y` class indices (long).

    Every copy the audit trains uses it, so a copy learns as a model of that convention is trained: cross-entropy
    on logits; negative log-likelihood on log-probabilities (a final LogSoftmax); negative log-likelihood on the
    log of probabilities (a final Softmax, renormalised for per-class Sigmoids; binary cross-entropy for one
    probability column), never cross-entropy on probabilities; binary cross-entropy with logits on a single
    logit (the logit of class index 1). Raises ValueError for `labels`: a label-only output has no gradient."""
    import torch.nn.functional as F

    from amulet_audit.core.outputs import to_log_probabilities

    def column(out):
        return out.unsqueeze(-1) if out.dim() == 1 else out

    if convention == "logits":
        return lambda out, y: F.cross_entropy(out, y, reduction="none")
    if convention == "log_probabilities":
        return lambda out, y: F.nll_loss(out, y, reduction="none")
    if convention == "single_logit":
        return lambda out, y: F.binary_cross_entropy_with_logits(column(out)[..., 0], y.to(out.dtype), reduction="none")
    if convention == "probabilities":
        def nll(out, y):
            out = column(out)
            k = out.shape[-1] if out.shape[-1] > 1 else 2
            return F.nll_loss(to_log_probabilities(out, "probabilities", k), y, reduction="none")

        return nll
    if convention == "labels":
        raise ValueError("a model that outputs labels only cannot be trained: its output has no gradient")
    raise ValueError(f"unknown output convention {convention!r}")


def soft_loss(convention: str = "logits"):
    """Per-record cross-entropy (nats, shape (n,)) of a raw output `out` under `convention` to target
    distributions `targets` (n, classes): -sum_c t_c log p_c, with log p read as `amulet_audit.core.outputs`
    reads the output (log-softmax of logits). Distillation at T = 1 (Hinton et al., 2015); one-hot targets give
    `loss_for`'s negative log-likelihood. Raises ValueError for `labels` (no gradient)."""
    import torch

    from amulet_audit.core.outputs import to_log_probabilities

    if convention == "labels":
        raise ValueError("a model that outputs labels only cannot be trained: its output has no gradient")
    if convention == "logits":
        return lambda out, targets: -(targets * torch.log_softmax(out, dim=1)).sum(1)
    return lambda out, targets: -(targets * to_log_probabilities(out, convention, targets.shape[-1])).sum(-1)


def batch_loss(convention: str = "logits"):
    """The mean of `loss_for(convention)` over a batch: f(out, y) -> scalar tensor (nats). For logits it is torch's
    mean-reduced cross-entropy itself, so logits models train exactly as they always have."""
    import torch.nn.functional as F

    if convention == "logits":
        return lambda out, y: F.cross_entropy(out, y)
    per_record = loss_for(convention)
    return lambda out, y: per_record(out, y).mean()


def objective(output: str = "logits", *, soft: bool = False, weighted: bool = False):
    """The mini-batch loss (a scalar tensor, nats) of a raw output `out` under convention `output`: f(out, target)
    -> the mean over the batch, or f(out, target, w) -> the `w`-weighted mean sum_i w_i l_i / sum_i w_i when
    `weighted`. `target`: class indices (long, shape (n,)) with `loss_for`/`batch_loss`, or target distributions
    (float, shape (n, classes)) with `soft_loss` when `soft`. Raises ValueError for `labels` (no gradient)."""
    per_record = soft_loss(output) if soft else loss_for(output)
    if weighted:
        return lambda out, target, w: (per_record(out, target) * w).sum() / w.sum().clamp_min(1e-12)
    if soft:
        return lambda out, target: per_record(out, target).mean()
    return batch_loss(output)


def shuffled(batch_size: int):
    """The usual batch schedule: per epoch, `torch.randperm(n, generator=gen)` cut into batches of `batch_size`
    (the last one shorter). `batches(n, gen)` yields index tensors (long)."""
    import torch

    def batches(n: int, gen) -> Iterator:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            yield order[start:start + batch_size]

    return batches


def poisson(sample_rate: float, steps: int):
    """Poisson sampling, as DP-SGD's accountant assumes (Abadi et al., CCS 2016): `steps` batches, each record in
    each batch independently with probability `sample_rate` (`torch.rand(n, generator=gen) < sample_rate`). A
    batch may be empty. `batches(n, gen)` yields index tensors (long)."""
    import torch

    def batches(n: int, gen) -> Iterator:
        for _ in range(steps):
            yield torch.nonzero(torch.rand(n, generator=gen) < sample_rate).flatten()

    return batches


def train_loop(module, x: np.ndarray, target: np.ndarray, recipe: TrainingRecipe, *, seed: int, epochs: int,
               output: str = "logits", soft: bool = False, sample_weight: np.ndarray | None = None,
               batches: Callable | None = None, transform: Callable | None = None, gradients: Callable | None = None,
               optimizer: Callable | None = None, params=None, on_step: Callable | None = None,
               on_epoch: Callable | None = None):
    """Train `module` in place: `epochs` passes of mini-batch steps with the loss `objective(output, soft=soft,
    weighted=...)` on its raw output, in training mode, with the recipe's optimizer. Returns the module in eval
    mode (None when `module` is None), its weights on the audit's device (`core.device`): each batch is taken and
    transformed on the CPU, then moved there; `gradients` receives the moved batch.

    `x`: inputs (n, ...), read as float32. `target`: class indices (n,) (long), or with `soft` target
    distributions (n, classes) (float32). `sample_weight`: per-record weights (n,) (float32) or None.

    One generator, `torch.Generator().manual_seed(seed)`, draws every random number the loop and its hooks take,
    in the order they ask (deterministic for a seed on CPU; Dropout draws from torch's global generator). Hooks:
    - `batches(n, gen)`: one epoch's batches, index tensors; `shuffled(recipe.batch_size)` when None.
    - `transform(xb, tb, gen) -> xb`: replaces each batch's inputs (e.g. adversarial examples), called with the
      module in eval mode (no batch statistics updated); the step then runs in training mode. Without a module
      (`gradients` given), the transform switches the mode of whatever it runs itself.
    - `gradients(xb, tb)`: sets the gradients the optimizer steps with (e.g. per-example gradients as
      `grad_sample` for a DP optimizer) instead of the loss's backward pass through `module`; `module` may then
      be None (the loop neither calls it nor switches its mode).
    - `optimizer(params, gen)`: the optimizer over `params` (e.g. a DP optimizer drawing its noise from `gen`);
      `make_optimizer(params, recipe)` when None. `params`: what it steps, `module.parameters()` when None.
    - `on_step(i)`: after the i-th optimizer step (from 0); `on_epoch(e, epochs)`: after the e-th epoch (from 1).
    Raises ValueError for output `labels` (no gradient)."""
    import torch

    from amulet_audit.core.device import current, to_device

    gen = torch.Generator().manual_seed(seed)
    if module is not None:
        module.to(current())  # the weights train on the audit's device; batches are moved there one at a time
    # copies: callers (e.g. scikit-learn meta-estimators) may pass read-only arrays
    xt = torch.tensor(np.asarray(x), dtype=torch.float32)
    tt = torch.tensor(np.asarray(target), dtype=torch.float32 if soft else torch.long)
    wt = torch.tensor(np.asarray(sample_weight), dtype=torch.float32) if sample_weight is not None else None
    loss = objective(output, soft=soft, weighted=wt is not None) if gradients is None else None
    params = module.parameters() if params is None else params
    opt = optimizer(params, gen) if optimizer is not None else make_optimizer(params, recipe)
    batches = batches or shuffled(recipe.batch_size)
    if module is not None:
        set_mode(module, True)
    n, step = len(xt), 0
    for epoch in range(epochs):
        for idx in batches(n, gen):
            xb, tb = xt[idx], tt[idx]
            if transform is not None and module is not None:
                set_mode(module, False)
                xb = transform(xb, tb, gen)
                set_mode(module, True)
            elif transform is not None:  # the transform sees the weights through its own module
                xb = transform(xb, tb, gen)
            xb, tb = to_device(xb), to_device(tb)
            opt.zero_grad(set_to_none=True)
            if gradients is not None:
                gradients(xb, tb)
            elif wt is None:
                loss(module(xb), tb).backward()
            else:
                loss(module(xb), tb, to_device(wt[idx])).backward()
            opt.step()
            if on_step is not None:
                on_step(step)
            step += 1
        if on_epoch is not None:
            on_epoch(epoch + 1, epochs)
    return set_mode(module, False) if module is not None else None


def train_model(module, x: np.ndarray, y: np.ndarray, recipe: TrainingRecipe, *, seed: int, sample_weight: np.ndarray | None = None,
                epochs: int | None = None, output: str = "logits"):
    """Train `module` in place with mini-batch loss `loss_for(output)` on its raw output (cross-entropy for
    logits), weighted when `sample_weight` is given, for `epochs` (the recipe's when None): `train_loop` with hard
    labels `y` (class indices).

    Deterministic for a seed on CPU. Returns the module in eval mode.
    """
    return train_loop(module, x, y, recipe, seed=seed, epochs=epochs if epochs is not None else recipe.epochs,
                      output=output, sample_weight=sample_weight)
