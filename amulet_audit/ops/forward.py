"""Batched forward passes of the model under audit, without gradients."""

from __future__ import annotations

import numpy as np

BATCH = 1024


def logits(module, x: np.ndarray, batch_size: int = BATCH) -> np.ndarray:
    """Per-class scores of `module` for `x`, float64, shape (n, n_classes): logits, or log-probabilities where the
    audited model (or copy) has another output convention (`amulet_audit.ops.scores`); their log-softmax are the
    model's log-probabilities either way."""
    import torch

    out = []
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            out.append(module(torch.as_tensor(x[start:start + batch_size], dtype=torch.float32)).double().numpy())
    if not out:
        return np.zeros((0, 0))
    return np.concatenate(out)


def predict(module, x: np.ndarray) -> np.ndarray:
    return logits(module, x).argmax(axis=1)


def clean_accuracy(module, data) -> float:
    """Accuracy of `module` on the holdout records of `data` (an AuditData), a fraction in [0, 1]."""
    return float((predict(module, data.x_holdout) == data.y_holdout).mean())


def cross_entropy(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-example cross-entropy loss (nats, float64, shape (n,)) of logits `z` (n, k) against class indices `y`
    (n,): log sum_j exp(z_j - z_y), computed in float64 as log1p(sum_{j != y} exp(z_j - z_y)) where y has the
    largest logit, so that a confident prediction keeps a loss above zero (down to about exp(-700)) instead of
    rounding to exactly 0 once its margin passes about 17 (float32) or 37 (float64): records the model is very
    sure of stay ordered by how sure, not tied."""
    z = np.asarray(z, dtype=np.float64)
    rows = np.arange(len(y))
    d = z - z[rows, y][:, None]  # d_y = 0
    top = d.max(axis=1)
    d[rows, y] = -np.inf
    others = np.exp(d - np.maximum(top, 0)[:, None]).sum(axis=1)  # sum_{j != y} exp(d_j - max(top, 0))
    return np.where(top <= 0, np.log1p(others), top + np.log(others + np.exp(-top)))
