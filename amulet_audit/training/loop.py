"""Training a copy of the audited architecture with the data spec's recipe."""

from __future__ import annotations

import numpy as np

from amulet_audit.core.mode import set_mode
from amulet_audit.inputs.data import TrainingRecipe


def make_optimizer(params, recipe: TrainingRecipe):
    import torch

    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def loss_for(convention: str = "logits"):
    """The per-record training loss (nats, shape (n,)) for a model whose raw output follows `convention`
    (`amulet_audit.ops.scores.CONVENTIONS`): f(out, y) with `out` the raw output and `y` class indices (long).

    Every copy the audit trains uses it, so a copy learns as a model of that convention is trained: cross-entropy
    on logits; negative log-likelihood on log-probabilities (a final LogSoftmax); negative log-likelihood on the
    log of probabilities (a final Softmax, renormalised for per-class Sigmoids; binary cross-entropy for one
    probability column), never cross-entropy on probabilities; binary cross-entropy with logits on a single
    logit (the logit of class index 1). Raises ValueError for `labels`: a label-only output has no gradient."""
    import torch.nn.functional as F

    from amulet_audit.ops.scores import to_log_probabilities

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
    distributions `targets` (n, classes): -sum_c t_c log p_c, with log p read as `amulet_audit.ops.scores`
    reads the output (log-softmax of logits). Distillation at T = 1 (Hinton et al., 2015); one-hot targets give
    `loss_for`'s negative log-likelihood. Raises ValueError for `labels` (no gradient)."""
    import torch

    from amulet_audit.ops.scores import to_log_probabilities

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


def train_model(module, x: np.ndarray, y: np.ndarray, recipe: TrainingRecipe, *, seed: int, sample_weight: np.ndarray | None = None,
                epochs: int | None = None, output: str = "logits"):
    """Train `module` in place with mini-batch loss `loss_for(output)` on its raw output (cross-entropy for
    logits), weighted when `sample_weight` is given.

    Deterministic for a seed on CPU. Returns the module in eval mode.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    # copies: callers (e.g. scikit-learn meta-estimators) may pass read-only arrays
    xt = torch.tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.tensor(np.asarray(y), dtype=torch.long)
    wt = torch.tensor(np.asarray(sample_weight), dtype=torch.float32) if sample_weight is not None else None
    loss_fn, mean_loss = loss_for(output), batch_loss(output)
    opt = make_optimizer(module.parameters(), recipe)
    set_mode(module, True)
    n = len(xt)
    for _ in range(epochs if epochs is not None else recipe.epochs):
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, recipe.batch_size):
            idx = order[start:start + recipe.batch_size]
            opt.zero_grad(set_to_none=True)
            out = module(xt[idx])
            if wt is None:
                loss = mean_loss(out, yt[idx])
            else:
                w = wt[idx]
                loss = (loss_fn(out, yt[idx]) * w).sum() / w.sum().clamp_min(1e-12)
            loss.backward()
            opt.step()
    return set_mode(module, False)
