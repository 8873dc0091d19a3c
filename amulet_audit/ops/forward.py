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
    """Per-example cross-entropy loss (nats) of logits `z` against class indices `y`."""
    zmax = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    return lse - z[np.arange(len(y)), y]
