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


def train_model(module, x: np.ndarray, y: np.ndarray, recipe: TrainingRecipe, *, seed: int, sample_weight: np.ndarray | None = None,
                epochs: int | None = None):
    """Train `module` in place with mini-batch cross-entropy (weighted when `sample_weight` is given).

    Deterministic for a seed on CPU. Returns the module in eval mode.
    """
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    # copies: callers (e.g. scikit-learn meta-estimators) may pass read-only arrays
    xt = torch.tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.tensor(np.asarray(y), dtype=torch.long)
    wt = torch.tensor(np.asarray(sample_weight), dtype=torch.float32) if sample_weight is not None else None
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
                loss = F.cross_entropy(out, yt[idx])
            else:
                w = wt[idx]
                loss = (F.cross_entropy(out, yt[idx], reduction="none") * w).sum() / w.sum().clamp_min(1e-12)
            loss.backward()
            opt.step()
    return set_mode(module, False)
