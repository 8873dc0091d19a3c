"""What the model outputs: detecting its convention from probe records, and attaching the one conversion to
per-class log-probabilities (`amulet_audit.core.outputs`) to the audited model.

Models are shipped with different output conventions (DESIGN.md, "Output conventions"):

- `logits`: one unnormalised score per class (the default contract);
- `log_probabilities`: per-class log-probabilities (a final LogSoftmax);
- `probabilities`: per-class probabilities (a final Softmax, or a Sigmoid per class); for a two-class target one
  column holding the probability of class index 1 (a final Sigmoid trained with `BCELoss`);
- `single_logit`: one column for a two-class target, the logit z of class index 1 (a `BCEWithLogitsLoss`
  model): the logits [0, z];
- `labels`: the predicted class only, as an index (shape (n,) or (n, 1)) or one-hot (n, classes): no scores and no
  useful gradient.

The convention is detected from the outputs on probe records (`detect`), or taken from the data spec's `output`
key, and the audited model is wrapped once where it is loaded (`attach`), so that every forward pass, gradient and
attack sees per-class scores whose log-softmax are the model's log-probabilities. Trained copies are trained on
their raw output with the loss that matches the convention (`amulet_audit.training.loop.loss_for`) and wrapped the
same way (`scores_module`).

torch is imported inside the functions.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amulet_audit.core.errors import InputError
from amulet_audit.core.outputs import CONVENTIONS, DESCRIPTIONS, as_column, scores_module, to_log_probabilities  # noqa: F401

_SUM_TOL = 1e-3  # rows of probabilities sum to 1 within this (float32 Softmax over many classes)

@dataclass(frozen=True)
class OutputReading:
    """The convention of a model's output and how it was established. `source`: 'detected' or 'data spec';
    `evidence`: one sentence saying what the probe records showed; `warnings`: for the results."""

    convention: str
    source: str
    evidence: str
    warnings: list[str] = field(default_factory=list)

    @property
    def note(self) -> str:
        """One line for results and the report: the convention, how it was established, how the audit reads it."""
        return f"{self.convention} ({self.source}: {self.evidence}): {DESCRIPTIONS[self.convention]}"


# --- detection -------------------------------------------------------------------------------------------


def probe_records(data, n: int = 256) -> np.ndarray:
    """Up to `n` holdout and `n` training records: the inputs the output convention is read from."""
    return np.concatenate([data.x_holdout[:n], data.x_train[:n]]).astype(np.float32)


def _run(module, x: np.ndarray):
    import torch

    with torch.no_grad():
        return module(torch.as_tensor(x, dtype=torch.float32))


def _stress_outputs(module, x: np.ndarray) -> list[np.ndarray]:
    """Outputs on inputs far outside the data (records scaled by 10 and 100, and negated): a logit layer's
    outputs grow with them, a Softmax's or Sigmoid's stay in [0, 1]. Inputs the model refuses are skipped."""
    out = []
    for scale in (10.0, 100.0, -100.0):
        try:
            o = _run(module, x * scale)
            out.append(as_column(o).double().numpy())
        except Exception:  # e.g. an embedding lookup out of range: only the data probes then count
            continue
    return out


def _integer_valued(z: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(z)) and np.all(z == np.round(z)))


def _one_hot(z: np.ndarray) -> bool:
    return bool(np.isin(z, (0.0, 1.0)).all() and np.all(z.sum(axis=1) == 1))


def _bounded01(arrays: list[np.ndarray]) -> bool:
    return all(np.all(np.isfinite(a)) and a.min() >= 0.0 and a.max() <= 1.0 for a in arrays)


def _sums_to_one(z: np.ndarray) -> bool:
    return bool(z.min() >= 0.0 and np.all(np.abs(z.sum(axis=1) - 1.0) <= _SUM_TOL))


def _logs_sum_to_one(z: np.ndarray) -> bool:
    if z.max() > 1e-5:
        return False
    peak = z.max(axis=1, keepdims=True)
    lse = peak[:, 0] + np.log(np.exp(z - peak).sum(axis=1))
    return bool(np.all(np.abs(lse) <= _SUM_TOL))


def detect(module, x: np.ndarray, n_classes: int, *, declared: str | None = None, model_path: Any = "model",
           spec_path: Any = "data spec", model_format: str = "") -> OutputReading:
    """The output convention of `module` (the raw model) from its outputs on probe records `x`, or the `declared`
    one (the data spec's `output`) after checking that the outputs allow it.

    Rules, in order: one column (or shape (n,)) of integers in [0, classes), or rows that are exactly one-hot ->
    labels; one column for two classes -> probabilities when every output, also on inputs far outside the data,
    lies in [0, 1], else single_logit; rows non-negative summing to 1 -> probabilities; rows whose exponentials sum
    to 1 -> log_probabilities; per-class rows in [0, 1] everywhere (also far outside the data) -> probabilities
    (a Sigmoid per class); otherwise logits. Raises InputError (one sentence naming the file and the fix) when the
    model refuses the records, returns something other than a tensor, or its output shape fits no convention."""
    import torch

    xt = torch.as_tensor(x)
    try:
        raw = _run(module, x)
    except Exception as exc:
        from amulet_audit.inputs.torch_errors import probe_failure

        raise InputError(probe_failure(model_path, model_format, exc, list(xt.shape[1:]))) from None
    if not isinstance(raw, torch.Tensor) or raw.dim() not in (1, 2):
        shape = list(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise InputError(
            f"{model_path}: the model outputs {shape} per batch; it must return one row per record: a score per "
            f"class ({n_classes} columns), one column for a two-class target, or the class label.")
    z = as_column(raw).double().numpy()
    cols = z.shape[1]
    k = n_classes
    if not np.all(np.isfinite(z)):
        raise InputError(f"{model_path}: the model outputs NaN or infinite values on the data's records; check the "
                         "model and the data's scaling.")

    if declared is not None:
        return _check_declared(declared, z, cols, k, raw, model_path, spec_path, module, x)

    integer_like = not raw.is_floating_point() or _integer_valued(z)
    if cols == 1:
        if integer_like and z.min() >= 0 and z.max() <= k - 1:
            return OutputReading("labels", "detected", f"one integer column with values in 0..{k - 1} on "
                                 f"{len(z)} probe records")
        if integer_like:  # whole numbers outside 0..k-1: class values (e.g. 1/2), never a logit or a probability
            values = np.unique(z)
            shown = ", ".join(f"{v:g}" for v in values[:6]) + (", …" if len(values) > 6 else "")
            raise InputError(
                f"{model_path}: the model outputs one column of whole numbers ({shown}), not class indices "
                f"0..{k - 1}, so it looks like a label-only model returning class values; return the class index "
                f"(output index i is `classes[i]` in {spec_path}) or one score per class.")
        if k != 2:
            raise InputError(
                f"{model_path}: the model outputs one column per record, but the data has {k} classes and the "
                f"values are not class indices; return one score per class ({k} columns).")
        if _bounded01([z] + _stress_outputs(module, x)):
            return OutputReading("probabilities", "detected", f"one column in [0, 1] on {len(z)} probe records and "
                                 "on inputs far outside the data: the probability of class index 1")
        return OutputReading("single_logit", "detected", f"one unbounded column for a two-class target on {len(z)} "
                             "probe records: the logit of class index 1")
    if cols != k:
        raise InputError(
            f"{model_path}: the model outputs {list(raw.shape)} per batch, but the data has {k} classes; return one "
            f"score per class ({k} columns), or one column for a two-class target, or set `output` in {spec_path}.")
    if _one_hot(z):
        return OutputReading("labels", "detected", f"every row one-hot on {len(z)} probe records")
    if _sums_to_one(z):
        return OutputReading("probabilities", "detected", f"rows non-negative and summing to 1 on {len(z)} probe "
                             "records")
    if _logs_sum_to_one(z):
        return OutputReading("log_probabilities", "detected", f"rows whose exponentials sum to 1 on {len(z)} probe "
                             "records")
    stress = _stress_outputs(module, x)
    if stress and _bounded01([z] + stress):
        return OutputReading("probabilities", "detected", f"every value in [0, 1] on {len(z)} probe records and on "
                             "inputs far outside the data: a Sigmoid per class")
    return OutputReading("logits", "detected", f"{k} unbounded scores per record on {len(z)} probe records")


def _check_declared(declared, z, cols, k, raw, model_path, spec_path, module, x) -> OutputReading:
    """The data spec's `output`, refused (InputError) where the outputs contradict it."""
    def refuse(why: str):
        raise InputError(f"{spec_path}: key 'output': '{declared}' does not fit the model {model_path}: {why}; "
                         f"correct `output` (one of {', '.join(CONVENTIONS)}) or remove it to let the audit detect it.")

    if declared not in CONVENTIONS:
        refuse("not a known convention")
    if declared == "labels":
        if cols == 1 and not (_integer_valued(z) and z.min() >= 0 and z.max() <= k - 1):
            refuse(f"its one output column does not hold class indices 0..{k - 1}")
        if cols not in (1, k):
            refuse(f"it outputs {cols} columns for {k} classes")
    elif declared == "single_logit":
        if cols != 1 or k != 2:
            refuse(f"a single logit is one output column for a two-class target; the model outputs {cols} "
                   f"column(s) and the data has {k} classes")
    elif declared == "probabilities":
        if not (cols == k or (cols == 1 and k == 2)):
            refuse(f"it outputs {cols} column(s) for {k} classes")
        if z.min() < 0 or (cols == 1 and z.max() > 1):
            refuse(f"its outputs are not probabilities (values from {z.min():.4g} to {z.max():.4g})")
    elif cols != k:  # logits, log_probabilities
        refuse(f"it outputs {cols} column(s) for {k} classes")
    elif declared == "log_probabilities" and z.max() > 1e-4:
        refuse(f"log-probabilities are at most 0, but it outputs values up to {z.max():.4g}")
    warnings = []
    try:
        found = detect(module, x, k, model_path=model_path, spec_path=spec_path).convention
    except InputError:
        found = declared
    if found != declared:
        warnings.append(f"The data spec declares output '{declared}', but the model's outputs on the probe records "
                        f"look like {found}; the declared convention was used.")
    return OutputReading(declared, "data spec", f"output: {declared}", warnings)


def attach(model, data):
    """`model` (a ModelHandle as loaded) with its output convention read (`detect`, or the data spec's `output`)
    and its module wrapped to return per-class scores (`scores_module`). Raises InputError when the model does not
    fit the data. The returned handle records the convention (`output`, `output_note`); its `raw` is the model as
    loaded, which fresh copies are made from."""
    if model.output_note:  # already read
        return model
    raw = model.module
    reading = detect(raw, probe_records(data), data.n_classes, declared=getattr(data.spec, "output", None),
                     model_path=model.path, spec_path=data.spec_path, model_format=model.format)
    wrapped = scores_module(raw, reading.convention, data.n_classes)
    if wrapped is not raw:
        wrapped = _checked_stable(wrapped, raw, reading.convention, data)
    # a model kind may say how its output is read and its copies trained (e.g. an estimator's predict_proba, clones)
    described = getattr(model, "output_description", "")
    note = f"{reading.convention} ({reading.source}: {reading.evidence}): {described}" if described else reading.note
    return dataclasses.replace(model, module=wrapped, raw=None if wrapped is raw else raw, output=reading.convention,
                               output_note=note, warnings=list(model.warnings) + list(reading.warnings))


def _checked_stable(wrapped, raw, convention: str, data):
    """The wrapper, without its log-space shortcut when the shortcut disagrees with the generic conversion on probe
    records (it then computes log of the output as given)."""
    if not wrapped.final:
        return wrapped
    import torch

    x = torch.as_tensor(probe_records(data, 64))
    with torch.no_grad():
        fast = wrapped(x).exp()
        slow = to_log_probabilities(raw(x), convention, data.n_classes).exp()
    if fast.shape == slow.shape and torch.allclose(fast, slow, atol=1e-4):
        return wrapped
    return scores_module(raw, convention, data.n_classes, stable=False)
