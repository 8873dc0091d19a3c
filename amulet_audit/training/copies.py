"""Trained copies of the audited architecture: a fresh copy trained the way the audited (or defended) model was."""

from __future__ import annotations

import numpy as np

from amulet_audit.core.defense import DefenseContext
from amulet_audit.training.cache import ModelCache, content_key
from amulet_audit.training.estimators import fit_estimator_copy, fits_copies
from amulet_audit.training.loop import train_model


def train_copy(model, x: np.ndarray, y: np.ndarray, recipe, *, seed: int, cache: ModelCache | None = None,
               epochs: int | None = None, sample_weight: np.ndarray | None = None, sensitive: dict | None = None):
    """A fresh copy of `model` (a ModelHandle) trained on (x, y) the way `model` was trained: with the data spec's
    recipe, and with the defense's procedure for a defended model (e.g. poisoned data passes through outlier
    removal first). `sensitive`: the records' sensitive attributes (name -> array aligned with x), which a
    defended model's procedure may need (fairness mitigation does). Cached by content (architecture, procedure,
    recipe, seed, data) when `cache` is given. Trained with the loss of `model.output` (`loop.loss_for`); returns
    the trained module in eval mode, returning per-class scores (`scored`), as `model.module` does."""
    if epochs is not None:
        recipe = recipe.model_copy(update={"epochs": epochs})
    if model.trainer is not None:
        return model.trainer(x, y, recipe, seed, cache, sensitive)
    if fits_copies(model):  # a scikit-learn estimator: a fitted clone (its hyperparameters are its recipe)
        return fit_estimator_copy(model, x, y, seed=seed, cache=cache, sample_weight=sample_weight)
    key = content_key("train_copy", model.architecture_digest(), seed, recipe.model_dump(), x, y,
                      sample_weight if sample_weight is not None else "unweighted")
    trained = (cache or ModelCache(None)).get_or_train(
        key, model.fresh_copy(seed),
        lambda m: train_model(m, x, y, recipe, seed=seed, sample_weight=sample_weight, output=model.output))
    return scored(model, trained)


def train_inner(ctx: DefenseContext, x: np.ndarray, y: np.ndarray, recipe, seed: int, *,
                sample_weight: np.ndarray | None = None):
    """The copy a defense trains on (x, y) (optionally weighted, `sample_weight` of shape (n,)): by the procedure
    of the defenses combined inside it (`ctx.inner`, see `core.defense.Combination`), else a plain copy of the
    audited architecture (`train_copy`). `ctx.sensitive` must be aligned with x. Returns per-class scores."""
    if ctx.inner is not None:
        return ctx.inner(ctx, x, y, recipe, seed, sample_weight=sample_weight)
    return train_copy(ctx.model, x, y, recipe, seed=seed, cache=ctx.cache, sample_weight=sample_weight)


def scored(model, raw):
    """A trained copy `raw` of `model`'s architecture (its raw output) as a module returning per-class scores, as
    `model.module` does (`amulet_audit.core.outputs.scores_module` for `model.output`), with its weights on the
    audit's device and called with CPU tensors (`core.device.placed`)."""
    from amulet_audit.core.device import placed
    from amulet_audit.core.outputs import scores_module

    return placed(scores_module(raw, model.output))


def plain_model(ctx: DefenseContext, x: np.ndarray, y: np.ndarray, recipe, seed: int):
    """The model trained without the defense on (x, y): the audited model itself when (x, y) is the audited
    training split, else a plain copy (e.g. trained on a poisoned training set)."""
    if x is ctx.data.x_train and y is ctx.data.y_train:
        return ctx.model.module
    return train_copy(ctx.model, x, y, recipe, seed=seed, cache=ctx.cache)
