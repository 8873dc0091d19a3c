"""Pre-flight checks of the model against its data, run once before any attack: a failure is bad input (exit 2)."""

from __future__ import annotations

import numpy as np

from amulet_audit.core.errors import InputError


def check_batch_dimension(model, data) -> None:
    """Refuse a model that runs on some batch sizes only (a batch size fixed by tracing or export, a reshape to a
    constant size): attacks score records in batches of any size. Tries batches of 1 and 3 records of the holdout.
    `model`: a ModelHandle whose `module` already ran on a batch of 2; `data`: an AuditData."""
    import torch

    for size in (1, 3):
        x = torch.as_tensor(data.x_holdout[:size])
        if len(x) < size:
            continue
        try:
            with torch.no_grad():
                out = model.module(x)
        except Exception as exc:
            from amulet_audit.inputs.torch_errors import error_cause

            raise InputError(
                f"{model.path}: the model runs on a batch of 2 records but not on a batch of {size} ({error_cause(exc)}): "
                "its batch size is fixed (by tracing, by export without a dynamic batch dimension, or by a reshape to a "
                "constant size); save it so that the first dimension may be any size (e.g. view(x.shape[0], -1), "
                "torch.export with dynamic_shapes)."
            ) from None
        # (a batch of 1 may come back squeezed; 3 records must give 3 rows)
        if size == 3 and isinstance(out, torch.Tensor) and out.dim() >= 1 and out.shape[0] != size:
            raise InputError(
                f"{model.path}: the model returns {out.shape[0]} rows for a batch of {size} records; it must return one "
                "row per record (the first dimension is the batch)."
            )


def check_class_order(model, data) -> None:
    """Refuse when the predictions on the model's own training records say its class order is not the data spec's:
    (a) its training accuracy is below the majority-class rate, or (b) another order of the classes fits its training
    records clearly better than the declared one (by at least 10 points). Both beyond chance (one-sided exact binomial
    tests at 0.1%: against the majority rate for (a); on the records where exactly one of the two orders is right for
    (b), as McNemar's test), so an under-fitted model is not refused.

    A trained model beats always predicting the most frequent class on the records it was trained on, and its own
    order fits it best; one that does not almost certainly reads its outputs in another class order than the data
    spec's (text labels, or a model trained with another mapping). The data spec's
    `expect_low_training_accuracy: true` turns the check off (e.g. for a model trained with class weights).
    `model`: a ModelHandle; `data`: an AuditData. Raises InputError (exit 2) naming the data spec.
    """
    from amulet_audit.ops.forward import predict

    if data.spec.expect_low_training_accuracy or len(data.y_train) == 0:
        return
    y = np.asarray(data.y_train)
    try:
        pred = np.asarray(predict(model.module, data.x_train)).astype(np.int64).reshape(-1)
    except InputError:
        raise
    except Exception as exc:  # e.g. a model that accepts the probe's 2 records but not a batch of 1,024
        from amulet_audit.inputs.torch_errors import probe_failure

        raise InputError(probe_failure(model.path, model.format, exc, list(data.x_train.shape[1:]))) from None
    correct = int((pred == y).sum())
    accuracy = correct / len(y)
    counts = np.bincount(y, minlength=data.n_classes)
    majority = float(counts.max() / len(y))
    order, relabelled = _best_order(pred, y, data.classes)
    better = order != list(data.classes) and _clearly_better(relabelled == y, pred == y)
    fix = ("set `classes` in the data spec to the model's output order (output index i is classes[i])"
           + (f"; the predictions match `classes: {_yaml_list(order)}` (training accuracy "
              f"{float((relabelled == y).mean()):.3f} with that order)" if order != list(data.classes) else ""))
    tail = ("If so low a training accuracy is expected (e.g. a model trained with class weights), set "
            "`expect_low_training_accuracy: true` in the data spec.")
    if _clearly_below(correct, len(y), majority):
        most = data.classes[int(counts.argmax())]
        raise InputError(
            f"{data.spec_path}: the model's accuracy on its own training records is {accuracy:.3f}, below the "
            f"majority-class rate {majority:.3f} (always predicting '{most}'): the class order may be inverted; "
            f"{fix}. {tail}")
    if better:
        raise InputError(
            f"{data.spec_path}: the model's accuracy on its own training records is {accuracy:.3f} with the declared "
            f"class order but {float((relabelled == y).mean()):.3f} with another: the class order may be wrong; {fix}. "
            f"{tail}")


# How sure the checks must be: the chance of a result this extreme when the declared order is right.
_P_BELOW = 1e-3
_MARGIN = 0.10  # another order must fit at least this much better (accuracy on the training records)


def _clearly_below(correct: int, n: int, majority: float) -> bool:
    """Whether `correct` of `n` is below the majority-class rate beyond chance (one-sided exact binomial test)."""
    from scipy.stats import binom

    return correct < majority * n and float(binom.cdf(correct, n, majority)) < _P_BELOW


def _clearly_better(other: np.ndarray, declared: np.ndarray) -> bool:
    """Whether per-record correctness `other` (bool, n) beats `declared` by at least `_MARGIN` and beyond chance: an
    exact one-sided sign test on the records where exactly one of the two is right (McNemar's test)."""
    from scipy.stats import binom

    wins, losses = int((other & ~declared).sum()), int((declared & ~other).sum())
    if wins - losses < _MARGIN * len(other):
        return False
    return float(binom.sf(wins - 1, wins + losses, 0.5)) < _P_BELOW


def _best_order(pred: np.ndarray, y: np.ndarray, classes: list) -> tuple[list, np.ndarray]:
    """The class order under which the predictions (output indices, n) agree best with the labels (class indices, n)
    (a maximum-weight matching of the confusion matrix), and the predictions relabelled under it (n,)."""
    from scipy.optimize import linear_sum_assignment

    k = len(classes)
    ok = (pred >= 0) & (pred < k)
    confusion = np.zeros((k, k), dtype=np.int64)  # [true class, predicted output index]
    np.add.at(confusion, (y[ok], pred[ok]), 1)
    rows, cols = linear_sum_assignment(-confusion)
    order, to_class = list(classes), np.arange(k)
    for t, p in zip(rows, cols):
        order[p], to_class[p] = classes[t], t
    relabelled = np.where(ok, to_class[np.clip(pred, 0, k - 1)], -1)
    return order, relabelled


def _yaml_list(order: list) -> str:
    from amulet_audit.inputs.data import yaml_list

    return yaml_list(order)
