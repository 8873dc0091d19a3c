"""Training fidelity: does a copy trained with the data spec's recipe reproduce the audited model?

Reference models (LiRA, RMIA), shadow models (distribution inference), poisoned copies, an extraction surrogate and
every defended model are copies of the audited architecture trained with the data spec's recipe. The audit trains
one such copy on the training split (the audit seed) and compares it with the audited model on the holdout records.
When the copy does not reproduce the model (holdout accuracies more than `MAX_ACCURACY_GAP` apart, or agreement
below `min_agreement`), every requirement relying on trained copies carries a warning, and one whose attack trains
copies is judged as a bound on the side of more risk: it is never PASS (DESIGN.md, "Verdicts")."""

from __future__ import annotations

import math
import time

import numpy as np

from amulet_audit.core import registry
from amulet_audit.core.stats import binomial_ci
from amulet_audit.core.verdict import Verdict, judge
from amulet_audit.results.model import CopyFidelity, RequirementResult, Run

# The copy reproduces the audited model when their holdout accuracies are at most 3 points apart and the copy
# predicts the model's label on at least as many holdout records as the model predicts the true one (its holdout
# accuracy), or on 90% of them for a model more accurate than that. Two trainings of one recipe that differ only in
# their seed disagree mostly on the records the model gets wrong: on the credit example (77% accurate) seeds 0 and 1
# agree on 88% of the records, while a copy that learnt nothing agrees on about half of them.
MAX_ACCURACY_GAP = 0.03
MIN_AGREEMENT = 0.90


def min_agreement(audited_accuracy: float) -> float:
    """The agreement below which a copy does not reproduce a model of this holdout accuracy."""
    return min(MIN_AGREEMENT, audited_accuracy)


def copy_fidelity(model, data, *, seed: int, confidence: float = 0.95, cache=None) -> CopyFidelity:
    """One copy of `model` (a ModelHandle) trained with the data spec's recipe on the training split, compared with
    `model` on the holdout records. Not measured (with the reason) when the model offers no trainable copies or
    there are no holdout records."""
    from amulet_audit.core.component import unmet_need

    why = unmet_need({"trained_copies"}, model, data)
    if why:
        return CopyFidelity(not_measured=f"no copy was trained to check the data spec's recipe: {why}")
    if len(data.y_holdout) == 0:
        return CopyFidelity(not_measured="no copy was compared with the model: the data has no holdout records")
    import torch

    from amulet_audit.ops.forward import predict
    from amulet_audit.training.copies import train_copy

    t = time.perf_counter()
    torch.manual_seed(seed)
    copy = train_copy(model, data.x_train, data.y_train, data.spec.training, seed=seed, cache=cache)
    audited, copied, y = predict(model.module, data.x_holdout), predict(copy, data.x_holdout), data.y_holdout
    return compare_predictions(audited, copied, y, confidence=confidence, seconds=round(time.perf_counter() - t, 3))


def compare_predictions(audited: np.ndarray, copied: np.ndarray, y: np.ndarray, *, confidence: float = 0.95,
                        seconds: float = 0.0) -> CopyFidelity:
    """The fidelity record of two models' holdout predictions (class indices) against the labels `y`."""
    from scipy.stats import norm

    n = len(y)
    right_a, right_c = (audited == y).astype(float), (copied == y).astype(float)
    d = right_c - right_a
    gap = float(d.mean())
    half = float(norm.ppf(0.5 + confidence / 2) * d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("inf")
    gap_ci = [max(-1.0, gap - half), min(1.0, gap + half)] if math.isfinite(half) else None
    agree = int((audited == copied).sum())
    agreement = agree / n
    level = min_agreement(float(right_a.mean()))
    faithful = abs(gap) <= MAX_ACCURACY_GAP and agreement >= level
    out = CopyFidelity(
        accuracy_gap=gap, accuracy_gap_ci=gap_ci, agreement=agreement, agreement_ci=list(binomial_ci(agree, n, confidence)),
        audited_accuracy=float(right_a.mean()), copy_accuracy=float(right_c.mean()), n=n,
        max_accuracy_gap=MAX_ACCURACY_GAP, min_agreement=level, faithful=faithful, seconds=seconds)
    if not faithful:
        out.warning = (
            f"A copy trained with the data spec's recipe does not reproduce the audited model (holdout accuracy "
            f"{out.copy_accuracy:.1%} against {out.audited_accuracy:.1%}, same prediction on {agreement:.1%} of the "
            f"records; reproduced means at most {MAX_ACCURACY_GAP * 100:.0f} points apart and at least {level:.1%} the same), so values "
            "measured with trained copies (reference, shadow and poisoned models, surrogates, defended models) may "
            "under-state the risk of the audited model; correct the data spec's training recipe.")
    return out


def mark(fidelity: CopyFidelity | None, rows: list[RequirementResult], runs: list[Run], model, *,
         defended: bool = False) -> None:
    """Mark `rows` (judged requirements of the audited model, or of a defended one when `defended`) in place when
    the copy is not faithful: each whose attack trains copies, and every row of a defended model (itself a trained
    copy), gets the fidelity warning; a row whose attack trains copies is judged as a bound on the side of more risk
    (a PASS becomes INDETERMINATE with the warning's sentence)."""
    if fidelity is None or fidelity.faithful is not False:
        return
    by_id = {r.id: r for r in runs}
    for row in rows:
        run = by_id.get(row.run)
        trains = run is not None and _uses_copies(run, model)
        if not (trains or defended):
            continue
        if fidelity.warning not in row.warnings:
            row.warnings.append(fidelity.warning)
        if trains and row.verdict in (Verdict.PASS, Verdict.FAIL):
            # a PASS or FAIL carries no reason of its own (core.verdict._judge), so judging again with the bound
            # composes with any bound the attack set itself
            bound = "lower" if row.metric_info.higher_is_worse else "upper"
            verdict, why = judge(row.value, tuple(row.ci) if row.ci else None, row.threshold.op, row.threshold.value,
                                 bound=bound, bound_reason=fidelity.warning)
            row.verdict, row.reason = verdict, why


def _uses_copies(run: Run, model) -> bool:
    try:
        attack = registry.attack_class(run.attack)(**run.params)
        return bool(attack.uses_copies(attack.get_params(), model))
    except Exception:  # an unknown or misbehaving plugin: judge by its declaration alone
        try:
            return "trained_copies" in registry.attack_class(run.attack).needs
        except Exception:
            return False
