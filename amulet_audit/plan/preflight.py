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
    """Refuse when the model's accuracy on its own training records is below the majority-class rate (beyond chance:
    a one-sided exact binomial test at 0.1%, so an under-fitted model at about the majority rate is not refused).

    A trained model beats always predicting the most frequent class on the records it was trained on; one that does
    not almost certainly reads its outputs in another class order than the data spec's (text labels, or a model
    trained with another mapping). The data spec's `expect_low_training_accuracy: true` turns the check off (e.g. for
    a model trained with class weights). `model`: a ModelHandle; `data`: an AuditData.
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
    if not _clearly_below(correct, len(y), majority):
        return
    most = data.classes[int(counts.argmax())]
    raise InputError(
        f"{data.spec_path}: the model's accuracy on its own training records is {accuracy:.3f}, below the "
        f"majority-class rate {majority:.3f} (always predicting '{most}'): the class order may be inverted; set "
        f"`classes` in the data spec to the model's output order (output index i is classes[i]){_better_order(pred, y, data.classes)}. "
        "If so low a training accuracy is expected (e.g. a model trained with class weights), set "
        "`expect_low_training_accuracy: true` in the data spec."
    )


# How sure the check must be: the chance that a model as accurate as the majority-class rate scores this low or lower
# on n records. An under-fitted model that sits at the majority rate is not flagged; an inverted one is far below it.
_P_BELOW = 1e-3


def _clearly_below(correct: int, n: int, majority: float) -> bool:
    """Whether `correct` of `n` is below the majority-class rate beyond chance (one-sided exact binomial test)."""
    from scipy.stats import binom

    return correct < majority * n and float(binom.cdf(correct, n, majority)) < _P_BELOW


def _better_order(pred: np.ndarray, y: np.ndarray, classes: list[str]) -> str:
    """The class order under which the predictions agree best with the labels, when it differs and does better."""
    from scipy.optimize import linear_sum_assignment

    from amulet_audit.inputs.data import yaml_list

    k = len(classes)
    ok = (pred >= 0) & (pred < k)
    confusion = np.zeros((k, k), dtype=np.int64)  # [true class, predicted output index]
    np.add.at(confusion, (y[ok], pred[ok]), 1)
    rows, cols = linear_sum_assignment(-confusion)
    order = list(classes)
    for t, p in zip(rows, cols):
        order[p] = classes[t]
    agree = float(confusion[rows, cols].sum() / len(y))
    counts = np.bincount(y, minlength=k)
    if order == list(classes) or agree < counts.max() / len(y):
        return ""
    shown = yaml_list(order)
    return f"; the predictions match `classes: {shown}` (training accuracy {agree:.3f} with that order)"
