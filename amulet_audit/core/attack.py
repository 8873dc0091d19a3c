"""The contract every attack and metric follows (registered by name through entry points)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from amulet_audit.core.component import Component

# risk -> one-line description (DESIGN.md, "Risks, attacks, metrics, defenses")
RISKS: dict[str, str] = {
    "evasion": "Adversarial examples: small input changes that flip the model's decision.",
    "poisoning": "Manipulated training data that plants errors or backdoors.",
    "model_extraction": "Stealing the model's function through its query interface.",
    "membership_inference": "Telling whether a person's record was in the training data.",
    "attribute_inference": "Inferring a sensitive attribute of a training record from the model.",
    "data_reconstruction": "Recovering training inputs from the model.",
    "distribution_inference": "Inferring properties of the training population.",
    "discrimination": "Unequal outcomes or errors across protected groups.",
}

# The attack a requirement uses when it names none.
DEFAULT_ATTACK: dict[str, str] = {
    "evasion": "pgd",
    "membership_inference": "loss",
    "discrimination": "group_fairness",
}


# The attack that measures a risk from predicted labels alone: named in the reason when a model without scores or
# gradients (e.g. a label-only model) makes another attack of that risk not applicable.
LABEL_ONLY_ATTACK: dict[str, str] = {
    "evasion": "hopskipjump",
    "membership_inference": "label_only",
}

# The attack that measures a risk from per-class scores without gradients or trained copies: named in the reason
# when a model that offers scores only (ONNX, a prediction service) makes another attack of that risk not applicable.
SCORE_ONLY_ATTACK: dict[str, str] = {
    "evasion": "square",
    "membership_inference": "loss",
}


@dataclass(frozen=True)
class MetricSpec:
    """A thresholdable metric, shared by every attack that reports it (e.g. `attack_success_rate`).

    `kind` decides the interval: 'rate' -> exact binomial, 'statistic' -> bootstrap. `unit` says what the
    numbers are: 'fraction' (a share of records, 0..1), 'difference' (of two quantities in 0..1, so -1..1),
    'ratio' (of two fractions), 'auc' (0.5 is chance); empty: not declared."""

    name: str
    description: str
    higher_is_worse: bool
    kind: str = "statistic"
    unit: str = ""
    min_n: int = 0  # below this sample size (of `min_n_of`) the verdict is indeterminate
    min_n_of: str = "records"


@dataclass
class PairedSample:
    """The per-record evidence behind a Measurement, so that two models measured on the same records can be
    compared record by record (a paired bootstrap of the difference, `stats.paired_delta_ci`).

    `records` names each row (e.g. holdout index; members and non-members offset apart), `arrays` hold one value
    per row, and `statistic(arrays)` recomputes the measurement from them (a module-level function or a
    functools.partial of one, so the sample crosses process boundaries). `strata` (one label per row) are
    resampled separately, as the measurement's own bootstrap does (members and non-members). Never written to
    results.json."""

    records: Any  # np.ndarray (n,) int64
    arrays: dict[str, Any]  # name -> np.ndarray (n, ...)
    statistic: Callable[[dict[str, Any]], float]
    strata: Any = None  # np.ndarray (n,) or None


@dataclass
class Measurement:
    """One metric's value as an attack measured it: what a requirement is judged on.

    value : float or None
        The point estimate in the metric's unit (`MetricSpec.unit`); None when it could not be measured (then
        `reason` says why, and the requirement is NOT_APPLICABLE).
    ci : (low, high) or None
        The confidence interval at the context's confidence; None when none could be computed (never PASS).
    n : int
        The sample size behind the value (records, or members and non-members each, as the metric counts).
    reason : str
        One sentence when there is no value, or when the sample is too small for a verdict (INDETERMINATE).
    paired : PairedSample or None
        The per-record evidence, so that two models measured on the same records compare record by record.
    bound, bound_reason : str
        "upper" or "lower" when the audit itself found the true value may lie below or above `value` (robust
        accuracy under a gradient-masking warning is an upper bound), with the sentence saying why; a verdict the
        bound leaves open is INDETERMINATE.
    ci_method : str
        How `ci` was computed (`stats.CI_BINOMIAL`, `stats.CI_BOOTSTRAP`, ...), recorded in results.json.
    """

    value: float | None
    ci: tuple[float, float] | None
    n: int
    reason: str = ""  # set when the value is not applicable or its sample is too small
    paired: PairedSample | None = None  # per-record evidence, for paired comparisons between models
    # "upper" / "lower": the audit itself found the true value may lie below / above `value` (e.g. robust accuracy
    # under a gradient-masking warning is an upper bound); `judge` then declares no verdict the bound leaves open
    bound: str = ""
    bound_reason: str = ""  # one sentence: why the value is only a bound
    ci_method: str = ""  # how `ci` was computed (stats.CI_BINOMIAL, stats.CI_BOOTSTRAP, ...); recorded in results.json


def rate(hits, records, *, confidence: float, of=None, empty: str = "") -> Measurement:
    """The share of records counted in `of` (default: all) that are `hits` (bool per record), with its exact
    binomial interval and the per-record sample (`records` names the rows). No value, and `empty` as the
    reason, when no record is counted."""
    import numpy as np

    from amulet_audit.core.stats import CI_BINOMIAL, binomial_ci, share

    hits = np.asarray(hits, dtype=bool)
    of = np.ones_like(hits) if of is None else np.asarray(of, dtype=bool)
    k, n = int((hits & of).sum()), int(of.sum())
    if n == 0:
        return Measurement(None, None, 0, empty)
    sample = PairedSample(np.asarray(records), {"hits": hits & of, "of": of}, share)
    return Measurement(k / n, binomial_ci(k, n, confidence), n, paired=sample, ci_method=CI_BINOMIAL)


@dataclass
class AttackResult:
    """What an attack run returns: one Measurement per metric and JSON-serialisable evidence."""

    metrics: dict[str, Measurement]
    details: dict[str, Any] = field(default_factory=dict)
    not_applicable: str = ""  # a reason: the attack cannot run on these inputs (e.g. no sensitive attribute)


@dataclass(frozen=True)
class Profile:
    """Attack budgets. quick: smoke checks; standard: default audits; thorough: certification runs."""

    name: str
    eval_samples: int  # records attacked by evasion
    mia_samples: int  # members and non-members each, for membership inference
    bootstrap_reps: int
    restarts: int  # extra random restarts for iterative attacks
    curve_points: int  # epsilons on the robustness curve


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", eval_samples=500, mia_samples=2000, bootstrap_reps=200, restarts=0, curve_points=4),
    "standard": Profile("standard", eval_samples=2000, mia_samples=10000, bootstrap_reps=1000, restarts=1, curve_points=6),
    "thorough": Profile("thorough", eval_samples=10000, mia_samples=100000, bootstrap_reps=2000, restarts=4, curve_points=8),
}


@dataclass
class AttackContext:
    """Everything an attack may read. Attacks never see the policy."""

    model: Any  # ModelHandle (read-only)
    data: Any  # AuditData (read-only)
    seed: int
    profile: Profile
    confidence: float = 0.95
    progress: Callable[[float], None] | None = None  # fraction done, 0..1
    cache: Any = None  # amulet_audit.training.cache.ModelCache for trained copies (None: train every time)


class Attack(Component):
    """Base class for attacks and measurements. `__init__` stores keyword arguments unchanged; validation and work
    happen in `run` (as scikit-learn estimators do). A subclass implements `_run`; `run` itself is the same for
    every attack (the registry refuses a plugin that overrides it), so parameters and needs are always checked.

    Besides `Component`'s declarations (`name`, `defaults`, `parameter_constraints`, `needs`, `budgets`), an
    attack declares its `risk` (a key of `RISKS`) and the `metrics` it reports (registered `MetricSpec` names)."""

    risk: ClassVar[str] = ""
    metrics: ClassVar[tuple[str, ...]] = ()

    def run(self, ctx: AttackContext) -> AttackResult:
        """Validate the parameters, check the declared needs, then run the attack (`_run`).

        Parameters
        ----------
        ctx : AttackContext
            The audited model (`ctx.model`, a ModelHandle; read-only), the data (`ctx.data`: `x_train`,
            `x_holdout` float32 of shape (n, *input_shape), `y_*` int64 class indices of shape (n,)), the seed,
            the profile (`ctx.profile`; the attack's own budgets through `budget(ctx.profile, key)`) and the
            interval confidence (e.g. 0.95).

        Returns
        -------
        AttackResult
            One `Measurement` per declared metric (a value in the metric's units, its interval at
            `ctx.confidence` by the method the metric's `kind` names, and its sample size n) and JSON-serialisable
            details; or no metrics and `not_applicable` set to one sentence when a declared need is not met (no
            sensitive attribute; a label-only model for an attack that needs scores or gradients). The same
            inputs and seed give the same result; the model and data are left unchanged.

        Raises
        ------
        amulet_audit.core.params.ParameterError
            Before any work, when a parameter violates its constraint or is unknown; the message names the
            attack, the parameter and its allowed values.
        """
        params = self.validated_params()
        reason = self.unmet(params, ctx.model, ctx.data)
        if reason:
            return AttackResult({}, {}, not_applicable=reason)
        return self._run(ctx)

    def unmet(self, params: dict[str, Any], model, data) -> str:
        """`Component.unmet`, naming the risk's label-only attack where the model's missing scores or gradients are
        the reason (`with_alternative`)."""
        return self.with_alternative(super().unmet(params, model, data), model)

    def with_alternative(self, reason: str, model) -> str:
        """`reason` (one sentence: why this attack does not apply to `model`), followed by the risk's label-only
        attack (`LABEL_ONLY_ATTACK`) when `model` offers no scores or no gradients and that attack is another one, or
        its score-based attack (`SCORE_ONLY_ATTACK`) when `model` offers scores but no gradients or no trained copies;
        "" stays ""."""
        other, kind = self.alternative(model)
        if not reason or not other or other in reason:
            return reason
        return f"{reason}; the {kind} {other} runs on this model instead"

    def alternative(self, model) -> tuple[str, str]:
        """(registry name, kind) of the attack of the same risk that measures it from what `model` offers, when
        it offers no gradients or no scores: its score-based attack (`SCORE_ONLY_ATTACK`) when it offers scores
        but no gradients or no trained copies, else its label-only attack (`LABEL_ONLY_ATTACK`); ("", "") when the
        model offers scores and gradients, or the risk has no such attack, or it is this one. The runner runs it
        in this attack's place, with the parameters both take (`run.jobs.run_attack`)."""
        from amulet_audit.core.component import model_capabilities

        offered = model_capabilities(model)
        if {"scores", "gradients"} <= offered:
            return "", ""
        scores_only = "scores" in offered and not {"gradients", "trained_copies"} <= offered
        other = (SCORE_ONLY_ATTACK if scores_only else LABEL_ONLY_ATTACK).get(self.risk, "")
        if not other or other == self.name:
            return "", ""
        return other, "score-based attack" if scores_only else "label-only attack"

    def copies(self, profile) -> tuple | None:
        """The copies a run at `profile` trains before it measures anything, as a hashable description, or None
        (the default: none, or none worth training apart). Attack jobs on one model whose descriptions are equal
        train the same copies: the audit's graph trains them once, as a job of its own (`prepare`), before either
        runs, and the runs load them from the model cache."""
        return None

    def prepare(self, ctx: AttackContext) -> None:
        """Train the copies `copies(ctx.profile)` describes into `ctx.cache` (nothing by default)."""

    def _run(self, ctx: AttackContext) -> AttackResult:  # pragma: no cover - abstract
        """The attack itself, on parameters that `run` has validated (read them with `get_params()`)."""
        raise NotImplementedError
