"""Positive controls: would the attack have found the risk if it were there?

A PASS says the attack found too little. That means something only if the same attack, with the same parameters
and budget, finds the risk where it is known to be: a deliberately vulnerable control. The audit computes one
control per attack job of the plan (privacy and poisoning risks), on the audited model's architecture and data, and
reads it for that job's requirements on the audited model and on every defended model (a defended model's PASS is
just as powerless when the attack cannot detect the control). A control is *detected* when its measured value
breaches the requirement's threshold (its point estimate would FAIL). A PASS whose control was not detected becomes
INDETERMINATE ("the attack had no power at this budget: ..."); FAIL, INDETERMINATE and NOT_APPLICABLE stay as they
are. Where no control can be built (a model format without trainable copies, an attack without a meaningful
control), the requirement says so ("no positive control ...: <why>") and its verdict is left as measured.

The controls, per attack:

- Membership inference (`loss`, `lira`, `rmia`, and any attack of that risk): a copy of the audited architecture
  (`ModelHandle.fresh_copy`, `training.copies.train_copy`) trained on a small random subset of the training split
  (`CONTROL_MEMBERS` records, more when a metric needs more non-members) for many epochs (`CONTROL_STEPS` optimiser
  steps, at least the recipe's epochs; `CONTROL_ESCALATION` times more when it fits fewer than `CONTROL_FIT` of its
  records) without weight decay, attacked on a view of the data whose members are exactly that subset and whose
  non-members are the holdout records. Membership leakage grows with the generalisation gap and as the training set
  shrinks (Yeom et al., CSF 2018; Shokri et al., S&P 2017), and overfit models are the setting in which LiRA and RMIA
  were shown to identify members at low false-positive rates (Carlini et al., S&P 2022; Zarifzadeh et al., ICML
  2024). A copy whose training accuracy exceeds its holdout accuracy by less than `CONTROL_MIN_GAP` is no control (the
  architecture cannot overfit it). The view's recipe is the control's, so reference models (LiRA, RMIA) are trained by
  the attack itself as the control was, as the attacks assume of the audited model. Many more steps than needed to
  fit make the copy's confidences saturate in floating point, which ties members with confidently right non-members
  and weakens every score-based attack: the schedule stops near the fit.
- Poisoning (`label_flip`, `backdoor`, and any attack of that risk with a `fraction`): the same attack with a
  stronger poison, `fraction` raised to `CONTROL_POISON_FRACTION` (or three times the policy's, at most 1). The damage
  of label flipping and the success of a backdoor grow with the poisoned share (Biggio, Nelson & Laskov, ICML 2012;
  Gu, Dolan-Gavitt & Garg, BadNets, 2017); at one half, untargeted flips leave a binary label independent of the input.
- Attribute inference: a copy overfit (as for membership) on a small subset whose labels are replaced by the
  sensitive attribute (its most frequent values mapped to the output classes), attacked on a view whose victims are
  that subset. Its outputs carry the attribute of its training records by construction, the extreme of what
  Song & Shmatikov call overlearning (ICLR 2020), and beyond what imputation from the other features gives
  (the baseline of Jayaraman & Evans, USENIX Security 2022), because the copy memorised each member's value. An
  adversary that learns from non-members only (the `attribute_inference` attack with `use_features`) may not see that
  memorised disclosure: its PASS is then INDETERMINATE, as it should be, for it could not have found it.
- Data reconstruction (model inversion): a copy overfit on a few training records per class
  (`CONTROL_INVERSION_PER_CLASS`), many epochs without weight decay, attacked on a view whose members are those
  records: with so few records per class, what the model finds most typical of a class is near them (Fredrikson,
  Jha & Ristenpart, CCS 2015, invert one person per class).
- Distribution inference (`property_inference`): the same attack on a property no model can hide, group shares
  `CONTROL_RATIOS` (at least as far apart as the policy's): distinguishability grows with the distance between the
  two shares (Suri & Evans, PETS 2022). Its reference models are the attack's own; nothing of the audited model
  enters the measurement, so there is no copy to overfit.
- Any other attack of these risks: "no positive control for this attack: ...".
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from amulet_audit.training.estimators import fits_copies
from amulet_audit.core import registry
from amulet_audit.core.attack import AttackContext, AttackResult
from amulet_audit.core.verdict import Verdict, judge
from amulet_audit.results.model import PositiveControl, RequirementResult, Threshold

# The risks whose PASS means "the attack found too little", so a control tells whether it could have found more.
CONTROLLED_RISKS = ("membership_inference", "attribute_inference", "data_reconstruction", "distribution_inference",
                    "poisoning")

CONTROL_MEMBERS = 500  # training records of an overfit control (membership, attribute inference)
CONTROL_STEPS = 500  # optimiser steps of an overfit control (epochs = steps / batches per epoch) ...
CONTROL_FIT = 0.95  # ... or CONTROL_ESCALATION times as many when it fits fewer of its training records than this
CONTROL_ESCALATION = 4
CONTROL_MAX_EPOCHS = 2000
CONTROL_MIN_GAP = 0.05  # an overfit control less this much more accurate on its training records than on the holdout
# records is not vulnerable (no control)
CONTROL_INVERSION_PER_CLASS = 2  # training records per class of a model-inversion control
CONTROL_POISON_FRACTION = 0.5  # poisoned share of the training records in a poisoning control
CONTROL_RATIOS = (0.95, 0.05)  # group shares a property-inference control tells apart

NO_POWER = "the attack had no power at this budget"


@dataclass
class Control:
    """The positive control of one attack job: what was run (`attack`, `params`, `description`) and what the attack
    returned there (`out`), or why there is none (`not_available`)."""

    attack: str
    params: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    out: AttackResult | None = None
    not_available: str = ""
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    # no control could be trained at all (the model offers no trainable copies): the attack's power is unknown
    unknown_power: bool = False


@dataclass
class _Setup:
    """How to run one control: the model and data view to attack, the attack's parameters, and what it is."""

    model: Any
    data: Any
    params: dict[str, Any]
    description: str
    details: dict[str, Any] = field(default_factory=dict)


def positive_controls(model, data, plan, *, seed: int, profile, confidence: float = 0.95, cache=None,
                      metrics: dict[str, str] | None = None, progress=None) -> dict[str, Control]:
    """One Control per attack job of `plan` whose attack's risk is in `CONTROLLED_RISKS` (`controlled`), keyed by
    the job's key; each as `control_of` makes it."""
    return {plan.jobs[i].key: control_of(plan.jobs[i], model, data, seed=seed, profile=profile, confidence=confidence,
                                         cache=cache, metrics=metrics, progress=progress)
            for i in controlled(plan)}


def controlled(plan) -> list[int]:
    """Indexes of the plan's attack jobs whose attack's risk is in `CONTROLLED_RISKS` (each gets a control)."""
    out = []
    for i, job in enumerate(plan.jobs):
        try:
            cls = registry.attack_class(job.attack)
        except Exception:  # noqa: BLE001 - an unknown attack was already reported by its own run
            continue
        if cls.risk in CONTROLLED_RISKS:
            out.append(i)
    return out


def control_of(job, model, data, *, seed: int, profile, confidence: float = 0.95, cache=None,
               metrics: dict[str, str] | None = None, progress=None) -> Control:
    """The positive control of one attack job (`plan.Job`): the same attack, parameters and budget on a
    deliberately vulnerable setting (`_setup`), with its wall time.

    `model` is the audited ModelHandle (read-only; controls are fresh copies of its architecture), `data` the
    AuditData, `profile` the audit's Profile (the attack's budget), `cache` a ModelCache for the trained controls,
    `metrics` the metric of each requirement id (a membership control keeps as many non-members as its metrics need).
    A control that cannot be built records why in `not_available`. Raises what a built-in attack raises; a
    third-party attack that fails on its control gets `not_available` with the error."""
    t = time.perf_counter()
    label = f"positive control: {job.attack}"
    wanted = [(metrics or {}).get(r, "") for r in job.requirements]
    control = _control(registry.attack_class(job.attack), job, model, data, wanted, seed=seed, profile=profile,
                       confidence=confidence, cache=cache,
                       progress=(lambda f: progress(label, f)) if progress else None)
    control.seconds = round(time.perf_counter() - t, 3)
    if progress:
        progress(label, 1.0)
    return control


def _control(cls, job, model, data, wanted, *, seed, profile, confidence, cache, progress) -> Control:
    from amulet_audit.core.component import unmet_need
    from amulet_audit.core.errors import InputError

    attack = cls(**job.params)
    params = attack.get_params()
    control = Control(job.attack, params)
    why = unmet_need({"trained_copies"}, model, data)
    if why:
        control.not_available = f"no positive control: {why}"
        control.unknown_power = True
        return control
    try:
        setup = _setup(cls, params, model, data, seed=seed, cache=cache, metrics=wanted)
    except _NoControl as exc:
        control.not_available = str(exc)
        return control
    control.params, control.description, control.details = setup.params, setup.description, dict(setup.details)
    import torch

    torch.manual_seed(seed)
    ctx = AttackContext(model=setup.model, data=setup.data, seed=seed, profile=profile, confidence=confidence,
                        progress=progress, cache=cache)
    provider = registry.attacks()[job.attack].provider
    try:
        result = cls(**setup.params).run(ctx)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - a plugin's failure on its control must not end the audit
        if provider.startswith("amulet-audit "):
            raise
        control.not_available = f"no positive control: the attack failed on its control ({type(exc).__name__}: {exc})"
        return control
    control.out = result
    control.details.update({k: v for k, v in result.details.items() if _scalar(v)})
    return control


class _NoControl(Exception):
    """No meaningful control exists for this attack on these inputs; the message is the sentence to record."""


def _setup(cls, params: dict, model, data, *, seed: int, cache, metrics: list[str]) -> _Setup:
    risk = cls.risk
    if risk == "membership_inference":
        return _membership(model, data, params, seed=seed, cache=cache, metrics=metrics)
    if risk == "poisoning":
        return _poisoning(cls, model, data, params)
    if risk == "attribute_inference":
        return _attribute(model, data, params, seed=seed, cache=cache)
    if risk == "data_reconstruction":
        return _reconstruction(model, data, params, seed=seed, cache=cache)
    if risk == "distribution_inference" and "ratios" in params:
        return _distribution(model, data, params)
    raise _NoControl(f"no positive control for this attack: amulet-audit knows no deliberately vulnerable setting "
                     f"for '{cls.name}' (it controls membership, attribute and property inference, model inversion "
                     "and poisoning by a fraction)")


def overfit_recipe(recipe, n: int, steps: int = 0):
    """The recipe of an overfit control trained on `n` records: the data spec's optimiser, learning rate and batch
    size, no weight decay, and epochs enough for `steps` optimiser steps (default `CONTROL_STEPS`; at least the
    recipe's epochs, at most `CONTROL_MAX_EPOCHS`)."""
    batches = max(1, math.ceil(n / recipe.batch_size))
    epochs = min(CONTROL_MAX_EPOCHS, max(recipe.epochs, math.ceil((steps or CONTROL_STEPS) / batches)))
    return recipe.model_copy(update={"epochs": int(epochs), "weight_decay": 0.0})


def _view(data, idx: np.ndarray, recipe, y: np.ndarray | None = None):
    """`data` whose training split (the members) is the records `idx` of it (labels `y` instead of theirs when
    given), and whose spec's training recipe is `recipe` (the control's, so that reference models train as it did)."""
    return dataclasses.replace(
        data, x_train=data.x_train[idx], y_train=data.y_train[idx] if y is None else y,
        sensitive_train={k: np.asarray(v)[idx] for k, v in data.sensitive_train.items()},
        spec=data.spec.model_copy(update={"training": recipe}))


def _handle(model, module, label: str):
    """A ModelHandle for a trained control: the audited model's architecture and output convention, trained plainly."""
    from amulet_audit.core.digest import weights_digest
    from amulet_audit.core.mode import set_mode

    set_mode(module, False)
    return dataclasses.replace(model, module=module, sha256=weights_digest(module, label), warnings=[], trainer=None)


@dataclass
class _Overfit:
    """A trained overfit control: its handle, recipe, and accuracy on its training records and on the holdout."""

    model: Any
    recipe: Any
    train_accuracy: float
    holdout_accuracy: float | None

    @property
    def gap(self) -> float | None:
        return None if self.holdout_accuracy is None else self.train_accuracy - self.holdout_accuracy

    @property
    def phrase(self) -> str:
        """How the control was trained, for the evidence: epochs without weight decay, or a fitted clone."""
        if fits_copies(self.model):  # a scikit-learn estimator: no epochs, its own hyperparameters
            return "a clone of the audited estimator (sklearn.base.clone, its own hyperparameters) fitted"
        return f"a copy of the audited architecture trained for {self.recipe.epochs} epochs without weight decay"

    def text(self) -> str:
        held = "" if self.holdout_accuracy is None else f", holdout accuracy {self.holdout_accuracy:.1%}"
        return f"training accuracy {self.train_accuracy:.1%}{held}"

    def details(self) -> dict[str, Any]:
        return {"control_epochs": self.recipe.epochs, "control_train_accuracy": self.train_accuracy,
                "control_holdout_accuracy": self.holdout_accuracy}


def _overfit(model, data, idx: np.ndarray, *, seed: int, cache, y: np.ndarray | None = None,
             y_holdout: np.ndarray | None = None, label: str) -> _Overfit:
    """A copy of `model`'s architecture trained on the training records `idx` (labels `y`, default theirs) with
    `overfit_recipe`; trained once more with `CONTROL_ESCALATION` times the steps when it fits fewer than
    `CONTROL_FIT` of them (Zhang et al., ICLR 2017: networks fit their training set, random labels included, given
    enough steps; here 95%, as the overfit controls of the membership literature). Its accuracy on the holdout records is against `y_holdout` (default their labels)."""
    from amulet_audit.ops.forward import predict
    from amulet_audit.training.copies import train_copy

    labels = data.y_train[idx] if y is None else y
    for steps in (CONTROL_STEPS, CONTROL_STEPS * CONTROL_ESCALATION):
        recipe = overfit_recipe(data.spec.training, len(idx), steps)
        module = train_copy(model, data.x_train[idx], labels, recipe, seed=seed, cache=cache)
        fit = float((predict(module, data.x_train[idx]) == labels).mean())
        if fit >= CONTROL_FIT or recipe.epochs >= CONTROL_MAX_EPOCHS:
            break
    truth = data.y_holdout if y_holdout is None else y_holdout
    held = float((predict(module, data.x_holdout) == truth).mean()) if len(truth) else None
    return _Overfit(_handle(model, module, label), recipe, fit, held)


def _vulnerable(control: _Overfit, n: int) -> None:
    """Raise _NoControl when the control did not overfit: its training accuracy at most `CONTROL_MIN_GAP` above its
    holdout accuracy. The advantage of a loss-threshold adversary is bounded by that gap (Yeom et al., CSF 2018), so
    such a copy is no evidence of what the attack can find."""
    if control.gap is not None and control.gap < CONTROL_MIN_GAP:
        raise _NoControl(f"no positive control: a copy of the architecture trained for {control.recipe.epochs} epochs "
                         f"on {n:,} training records did not overfit them ({control.text()}), so no deliberately "
                         "vulnerable copy could be built")


def _members(data, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 5])
    return np.sort(rng.choice(len(data.x_train), n, replace=False))


def _membership(model, data, params, *, seed, cache, metrics) -> _Setup:
    from amulet_audit.risks.membership import TPR_AT_FPR_0001, TPR_AT_FPR_001

    need = max([CONTROL_MEMBERS] + [s.min_n for s in (TPR_AT_FPR_001, TPR_AT_FPR_0001) if s.name in metrics])
    n = min(need, len(data.x_train), len(data.x_holdout))
    if n < 10:
        raise _NoControl("no positive control: fewer than 10 training or holdout records")
    idx = _members(data, n, seed)
    control = _overfit(model, data, idx, seed=seed, cache=cache, label="positive-control:membership")
    _vulnerable(control, n)
    view = _view(data, idx, control.recipe)
    text = (f"{control.phrase} on "
            f"{n:,} training records ({control.text()}), those records as members and the holdout records as "
            "non-members")
    return _Setup(control.model, view, dict(params), text, {"control_members": n, **control.details()})


def _poisoning(cls, model, data, params) -> _Setup:
    if "fraction" not in params:
        raise _NoControl(f"no positive control for this attack: '{cls.name}' has no poisoned fraction to raise")
    base = float(params["fraction"])
    fraction = min(1.0, max(CONTROL_POISON_FRACTION, 3 * base))
    text = (f"the same attack with a stronger poison: {fraction:.0%} of the training records poisoned instead of "
            f"{base:.0%}")
    return _Setup(model, data, {**params, "fraction": fraction}, text, {"control_fraction": fraction})


def _attribute(model, data, params, *, seed, cache) -> _Setup:
    if not data.sensitive_train:
        raise _NoControl("no positive control: the data spec names no sensitive attribute")
    attr = params.get("attribute") or next(iter(data.sensitive_train))
    if attr not in data.sensitive_train:
        raise _NoControl(f"no positive control: '{attr}' is not a sensitive attribute of the data spec")
    n = min(CONTROL_MEMBERS, len(data.x_train))
    idx = _members(data, n, seed)
    groups = np.asarray(data.sensitive_train[attr])[idx].astype(str)
    names, counts = np.unique(groups, return_counts=True)
    if len(names) < 2:
        raise _NoControl(f"no positive control: '{attr}' takes a single value in the control's training records")
    ranked = [str(g) for g in names[np.argsort(-counts, kind="stable")]]
    k = data.n_classes
    cls_of = {g: min(r, k - 1) for r, g in enumerate(ranked)}
    y = np.array([cls_of[g] for g in groups], dtype=np.int64)
    held = np.array([cls_of.get(g, k - 1) for g in np.asarray(data.sensitive_holdout.get(attr, [])).astype(str)],
                    dtype=np.int64)
    control = _overfit(model, data, idx, seed=seed, cache=cache, y=y,
                       y_holdout=held if len(held) == len(data.y_holdout) else data.y_holdout[:0],
                       label=f"positive-control:attribute:{attr}")
    _vulnerable(control, n)
    view = _view(data, idx, control.recipe)  # the victims keep their true labels: the attack's adversary knows them
    shown = ", ".join(ranked[: k - 1]) + (" and the rest" if len(ranked) > k else f", {ranked[-1]}")
    text = (f"{control.phrase} to "
            f"output the {attr} ({shown}) of {n:,} training records ({control.text()} on the {attr}), those records "
            "as victims")
    return _Setup(control.model, view, dict(params), text,
                  {"control_attribute": attr, "control_members": n, **control.details()})


def _reconstruction(model, data, params, *, seed, cache) -> _Setup:
    rng = np.random.default_rng([seed, 6])
    idx = []
    for c in range(data.n_classes):
        rows = np.flatnonzero(data.y_train == c)
        if len(rows):
            idx.append(rng.choice(rows, min(CONTROL_INVERSION_PER_CLASS, len(rows)), replace=False))
    if not idx:
        raise _NoControl("no positive control: no training record")
    idx = np.sort(np.concatenate(idx))
    control = _overfit(model, data, idx, seed=seed, cache=cache, label="positive-control:inversion")
    _vulnerable(control, len(idx))
    view = _view(data, idx, control.recipe)
    text = (f"{control.phrase} on "
            f"{CONTROL_INVERSION_PER_CLASS} training records per class ({len(idx)} in all; {control.text()}), those "
            "records as members")
    return _Setup(control.model, view, dict(params), text, {"control_members": int(len(idx)), **control.details()})


def _distribution(model, data, params) -> _Setup:
    ratios = [float(r) for r in params["ratios"]]
    control = [max(CONTROL_RATIOS[0], max(ratios)), min(CONTROL_RATIOS[1], min(ratios))]
    text = (f"the same attack on group shares {control[0]:.0%} against {control[1]:.0%} instead of "
            f"{ratios[0]:.0%} against {ratios[1]:.0%}")
    return _Setup(model, data, {**params, "ratios": control}, text, {"control_ratios": control})


def _scalar(v) -> bool:
    return isinstance(v, (bool, int, float, str)) or v is None


# --- verdicts ----------------------------------------------------------------------------------


def record(control: Control, row: RequirementResult) -> PositiveControl:
    """What `control` measured for the requirement `row` (its metric, against its threshold)."""
    rec = PositiveControl(attack=control.attack, params=control.params, description=control.description,
                          metric=row.metric, threshold=row.threshold, seconds=control.seconds,
                          details=control.details, not_available=control.not_available)
    if control.not_available or control.out is None:
        return rec
    out = control.out
    m = out.metrics.get(row.metric)
    if out.not_applicable or m is None or m.value is None:
        why = out.not_applicable or (m.reason if m is not None else "") or f"{control.attack} did not report {row.metric}"
        rec.not_available = f"no positive control: the attack measured nothing on its control ({why})"
        return rec
    rec.value, rec.n = float(m.value), int(m.n)
    rec.ci = [float(c) for c in m.ci] if m.ci is not None else None
    rec.detected = breaches(rec.value, row.threshold)
    return rec


def breaches(value: float, threshold: Threshold) -> bool:
    """Whether `value` is on the wrong side of `threshold` (a point estimate there would FAIL)."""
    return value < threshold.value if threshold.op == ">=" else value > threshold.value


def no_power_sentence(rec: PositiveControl) -> str:
    """'the attack had no power at this budget: ...' for a control the attack did not detect."""
    ci = f" [{rec.ci[0]:.3g}, {rec.ci[1]:.3g}]" if rec.ci else ""
    return (f"{NO_POWER}: on a deliberately vulnerable control ({rec.description}) it measured {rec.metric} "
            f"{rec.value:.3g}{ci}, which does not breach the threshold {rec.threshold.op} {rec.threshold.value:g}")


def mark(controls: dict[str, Control], plan, rows: list[RequirementResult]) -> None:
    """Attach each row's control (by the job that measured its requirement) in place, and judge a PASS whose
    attack did not detect its control as INDETERMINATE with `no_power_sentence`, as is a PASS whose control could
    not be trained at all (a model without trainable copies: ONNX, a prediction service). Rows of other risks, and
    of jobs without a control, are left alone."""
    for row in rows:
        job = plan.job_of.get(row.id)
        control = controls.get(job.key) if job is not None else None
        if control is None:
            continue
        row.control = record(control, row)
        if row.verdict is Verdict.PASS and (row.control.detected is False or control.unknown_power):
            # the measured value is a bound on the side of less risk: judging again with it composes with the rest
            bound = "lower" if row.metric_info.higher_is_worse else "upper"
            why = (no_power_sentence(row.control) if row.control.detected is False else
                   f"{control.not_available}, so whether the attack could find the risk at this budget is unknown")
            row.verdict, row.reason = judge(row.value, tuple(row.ci) if row.ci else None, row.threshold.op,
                                            row.threshold.value, bound=bound, bound_reason=why)


def seconds(controls: dict[str, Control]) -> float:
    """Wall time of all controls together (s), for `AuditResult.timings`."""
    return round(sum(c.seconds for c in controls.values()), 3)
