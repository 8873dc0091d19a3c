"""Trained copies of a scikit-learn estimator (`inputs.sklearn_model.SklearnHandle`): `sklearn.base.clone`s
fitted on the given records, cached by content as skops bytes (never pickle), for every place the audit trains
copies (`training.copies.train_copy`, reference models for LiRA/RMIA and property inference).

A handle offers such copies when it has `fit_copy` (`fits_copies`); torch modules are re-initialised and trained
with the data spec's recipe instead (`training.loop`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from amulet_audit.training.cache import ModelCache, content_key

_KEY_VERSION = "amulet-audit/estimator-copy/v1"


def fits_copies(model) -> bool:
    """Whether `model`'s copies are fitted clones of an estimator (it has `fit_copy`), not re-initialised modules."""
    return callable(getattr(model, "fit_copy", None))


def fit_estimator_copy(model, x: np.ndarray, y: np.ndarray, *, seed: int, cache: ModelCache | None = None,
                       sample_weight: np.ndarray | None = None):
    """`model.fit_copy(x, y, seed=seed, sample_weight=sample_weight)` (a fitted clone as a module returning
    per-class log-probabilities), loaded from `cache` when a copy of the same estimator (class and
    hyperparameters), seed, records and weights was fitted before. Stored as skops bytes in a uint8 tensor; a
    cached entry holding a type the user did not trust is fitted again.

    Raises
    ------
    ValueError
        When `sample_weight` is given and the estimator's fit takes none (from `fit_copy`)."""
    import torch

    key = content_key(_KEY_VERSION, model.architecture_digest(), int(seed), np.ascontiguousarray(x),
                      np.ascontiguousarray(y), sample_weight if sample_weight is not None else "unweighted")
    if cache is not None:
        state = cache.load(key)
        if state is not None and "skops" in state:
            module = model.loads(state["skops"].numpy().tobytes())
            if module is not None:
                return module
    module = model.fit_copy(x, y, seed=seed, sample_weight=sample_weight)
    if cache is not None and cache.root is not None:
        cache.save(key, {"skops": torch.frombuffer(bytearray(model.dumps(module)), dtype=torch.uint8)})
    return module


def fitted_reference_models(model, x: np.ndarray, y: np.ndarray, masks: np.ndarray, *, seed: int, cache=None,
                            progress=None) -> dict[str, Any]:
    """K fitted clones, clone k on (x[masks[k]], y[masks[k]]) with seed `seed + k` (`fit_estimator_copy`):
    {"modules": [...], "details": {...}} for `training.reference.ReferenceModels`."""
    modules, hits = [], getattr(cache, "hits", 0)
    for k in range(masks.shape[0]):
        modules.append(fit_estimator_copy(model, x[masks[k]], y[masks[k]], seed=seed + k, cache=cache))
        if progress:
            progress((k + 1) / masks.shape[0])
    details = {"trainer": "estimator clones", "n_models": int(masks.shape[0]),
               "from_cache": getattr(cache, "hits", 0) - hits,
               "reason": "each reference model is sklearn.base.clone of the audited estimator fitted on its records "
                         "(the estimator's own hyperparameters; the data spec's training recipe does not apply)"}
    return {"modules": modules, "details": details}
