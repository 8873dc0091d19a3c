"""The contract every defense follows (registered by name through the `amulet_audit.defenses` entry points)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from amulet_audit.core.attack import Profile
from amulet_audit.core.component import Component
from amulet_audit.core.mode import set_mode
from amulet_audit.core.digest import weights_digest


class DefenseNotApplicable(Exception):
    """The defense cannot be applied to these inputs (e.g. fairness mitigation without a sensitive attribute).
    The audit records the reason and goes on; the message is one sentence."""


@dataclass
class DefenseContext:
    """What a defense may read. Like attacks, defenses never see the policy: the planner passes what they
    need (e.g. the policy's evasion budget for adversarial training) as parameters."""

    model: Any  # ModelHandle of the audited model (read-only)
    data: Any  # AuditData (read-only)
    seed: int
    profile: Profile
    cache: Any = None  # ModelCache or None
    progress: Any = None  # callable(fraction) or None
    # sensitive attributes (name -> array) of the records `fit` is given, for procedures that need them
    sensitive: dict[str, np.ndarray] | None = None
    # In a combination of defenses: the procedure of the parts inside this one, which trains each copy this defense
    # would otherwise train plainly: inner(ctx, x, y, recipe, seed, *, sample_weight=None, transform=None) -> module
    # (see `Combination`). None: copies are trained plainly (`training.copies.train_inner` picks the route).
    inner: Any = None


@dataclass
class DefenseOutcome:
    """The defended model (a ModelHandle whose `module` is the new model) and evidence for the report."""

    model: Any
    details: dict[str, Any] = field(default_factory=dict)


class Defense(Component):
    """Base class. `__init__` stores keyword arguments unchanged; validation and work happen in `apply`.

    A defense that is a training procedure implements `fit(ctx, x, y, recipe, seed)`; `apply` then trains the
    defended model on the training split, and the defended model trains its own copies the same way (an attack
    that re-trains — poisoning — meets the defense as a real deployment would). A defense that is not (or not
    only) a training procedure overrides `_apply`; `apply` itself is the same for every defense (the registry
    refuses a plugin that overrides it), so parameters and needs are always checked.

    Besides `Component`'s declarations (`name`, `defaults`, `parameter_constraints`, `needs`, `budgets`), a
    defense declares the risks it is `intended` to reduce and a one-line `description`."""

    intended: ClassVar[tuple[str, ...]] = ()  # the risks this defense is meant to reduce
    description: ClassVar[str] = ""
    # parameter -> (risk, attack parameter): taken from the policy's first requirement of that risk naming it
    policy_params: ClassVar[dict[str, tuple[str, str]]] = {}
    # whether `fit` trains copies of the audited architecture (then a format's frozen train/eval mode matters)
    trains_copies: ClassVar[bool] = True
    # where the defense acts when combined with others (`STAGES`, outermost first); "" : it cannot be combined
    stage: ClassVar[str] = ""

    def cost(self, profile) -> float:
        """Roughly how many plain trainings of a copy applying the defense at `profile` costs (1 by default; a
        defense that trains no copy, less): the job graph starts the costliest defenses first."""
        return 1.0 if self.trains_copies else 0.1

    def fit(self, ctx: DefenseContext, x: np.ndarray, y: np.ndarray, recipe, seed: int):  # pragma: no cover
        """The defended training procedure on (x, y): returns a trained module (eval mode)."""
        raise NotImplementedError

    def evidence(self, ctx: DefenseContext, module) -> dict[str, Any]:
        """Details about the defended model for the report (e.g. the privacy budget spent)."""
        return {}

    def fit_with(self, ctx: DefenseContext, x: np.ndarray, y: np.ndarray, recipe, seed: int, *,
                 sample_weight: np.ndarray | None = None, transform: Any = None):
        """`fit` as an inner part of a `Combination`, with what the outer parts hand down: per-record weights
        (`sample_weight`, shape (n,), from a reweighting defense such as fairness mitigation) and a per-batch
        input transform (`transform(raw_module) -> f(xb, yb, gen) -> xb`, with a `key` attribute for the cache,
        from adversarial training). By default neither can be honoured, and a defense that is handed one is not
        applicable in that combination (one sentence naming what it cannot take).

        Raises DefenseNotApplicable when handed weights or a transform it cannot honour."""
        if sample_weight is not None:
            raise DefenseNotApplicable(f"{self.name} cannot train on weighted records, which the defense around it "
                                       "in the combination hands down")
        if transform is not None:
            raise DefenseNotApplicable(f"{self.name} cannot train on transformed batches, which the defense around "
                                       "it in the combination hands down")
        return self.fit(ctx, x, y, recipe, seed)

    def apply(self, ctx: DefenseContext) -> DefenseOutcome:
        """Validate the parameters, check the declared needs, then defend a copy of the audited model (`_apply`).

        Parameters
        ----------
        ctx : DefenseContext
            The audited model (`ctx.model`, a ModelHandle; read-only and never modified), the data (`ctx.data`:
            `x_train` float32 of shape (n, *input_shape), `y_train` int64 class indices of shape (n,)), the seed,
            the profile (the defense's own budgets through `budget(ctx.profile, key)`) and an optional cache of
            trained copies.

        Returns
        -------
        DefenseOutcome
            The defended model (a ModelHandle whose `sha256` is the digest of the defended weights and whose
            `trainer` trains copies with the same procedure) and JSON-serialisable evidence for the report (e.g.
            the privacy budget spent, in epsilon at the reported delta). The same inputs and seed give the same
            defended weights.

        Raises
        ------
        amulet_audit.core.params.ParameterError
            Before any work, when a parameter violates its constraint or is unknown; the message names the
            defense, the parameter and its allowed values.
        DefenseNotApplicable
            With one sentence, when a declared need is not met (e.g. no sensitive attribute to mitigate for) or
            the defense cannot apply to these inputs.
        """
        params = self.validated_params()
        reason = self.unmet(params, ctx.model, ctx.data)
        if reason:
            raise DefenseNotApplicable(reason)
        return self._apply(ctx)

    def _apply(self, ctx: DefenseContext) -> DefenseOutcome:
        """The defense itself, on parameters that `apply` has validated: by default, `fit` on the training split."""
        data = ctx.data
        module = self.fit(dataclasses.replace(ctx, sensitive=data.sensitive_train), data.x_train, data.y_train,
                          data.spec.training, ctx.seed)

        def trainer(x, y, recipe, seed, cache, sensitive):
            return self.fit(dataclasses.replace(ctx, cache=cache, progress=None, sensitive=sensitive), x, y, recipe, seed)

        handle = defended_handle(ctx.model, module, f"{self.name}:{self.get_params()}", trainer)
        details = self.evidence(ctx, module)
        fixed = getattr(ctx.model, "fixed_mode_layers", None)
        if fixed and self.trains_copies:
            details["training_mode"] = (
                f"the model file (traced or exported) freezes the train/eval behaviour of {', '.join(fixed[:5])}: "
                "the defended model trained with it as frozen, not as in training mode")
        return DefenseOutcome(handle, details)


# Where a defense acts when several are combined, outermost first: on the outputs of the trained model, on the
# weights of the training records, on the training set, on each mini-batch's inputs, on the optimizer's steps.
STAGES = ("output", "reweight", "data", "batch", "optimizer")


class Combination(Defense):
    """Several defenses applied together to one copy: the copy is trained with every procedure at once (e.g.
    DP-SGD with the adversarial examples of adversarial training in each Poisson-sampled batch), then measured
    like a single defense.

    The parts are ordered by `stage` (`STAGES`, outermost first). The outermost part's `fit` runs with
    `ctx.inner` set to the next part's `fit_with`, and so on inwards: where a defense would train a copy plainly
    it asks the parts inside it instead (`training.copies.train_inner`), handing down per-record weights or a
    per-batch transform. Two parts of the same stage, or a part that cannot be combined (`stage` ""), make the
    combination not applicable, with one sentence.

    `parts`: instantiated defenses (their own parameters, not yet validated). The combination's name joins the
    parts' names in the order given ("dp_sgd+adversarial_training")."""

    description = "Defenses combined in one training procedure"

    def __init__(self, parts: list[Defense]) -> None:
        super().__init__()
        self.parts = list(parts)
        self.name = "+".join(p.name for p in self.parts)
        self.intended = tuple(dict.fromkeys(r for p in self.parts for r in p.intended))
        self.needs = frozenset().union(*(p.needs for p in self.parts))
        self.trains_copies = any(p.trains_copies for p in self.parts)

    def get_params(self) -> dict[str, Any]:
        return {p.name: p.get_params() for p in self.parts}

    def validated_params(self) -> dict[str, Any]:
        return {p.name: p.validated_params() for p in self.parts}

    def unmet(self, params: dict[str, Any], model, data) -> str:
        for p in self.parts:
            reason = p.unmet(params[p.name], model, data)
            if reason:
                return f"{p.name}: {reason}"
        return ""

    def ordered(self) -> list[Defense]:
        """The parts, outermost first; DefenseNotApplicable (one sentence) when they cannot be combined."""
        alone = [p.name for p in self.parts if p.stage not in STAGES]
        if alone:
            raise DefenseNotApplicable(f"{', '.join(alone)} cannot be combined with other defenses")
        if len(self.parts) < 2:
            raise DefenseNotApplicable("a combination needs at least two defenses")
        for stage in STAGES:
            same = [p.name for p in self.parts if p.stage == stage]
            if len(same) > 1:
                raise DefenseNotApplicable(f"{' and '.join(same)} both act on the {stage} of training and cannot be "
                                           "combined in one procedure")
        return sorted(self.parts, key=lambda p: STAGES.index(p.stage))

    def _apply(self, ctx: DefenseContext) -> DefenseOutcome:
        self.ordered()  # refuse before any training
        return super()._apply(ctx)

    def fit(self, ctx: DefenseContext, x, y, recipe, seed):
        parts = self.ordered()

        def within(c: DefenseContext, k: int) -> DefenseContext:
            if k + 1 == len(parts):
                return dataclasses.replace(c, inner=None)

            def inner(c2, x2, y2, recipe2, seed2, *, sample_weight=None, transform=None):
                return parts[k + 1].fit_with(within(c2, k + 1), x2, y2, recipe2, seed2, sample_weight=sample_weight,
                                             transform=transform)

            return dataclasses.replace(c, inner=inner)

        return parts[0].fit(within(ctx, 0), x, y, recipe, seed)

    def evidence(self, ctx: DefenseContext, module) -> dict[str, Any]:
        """Each part's evidence under its name, and `combination`: the parts from the outermost procedure in."""
        return {"combination": [p.name for p in self.ordered()], **{p.name: p.evidence(ctx, module) for p in self.parts}}


def defended_handle(model, module, label: str, trainer=None):
    """A ModelHandle for `module`, a defended version of the audited `model` (same architecture for copies).

    Its sha256 is the hash of the defended weights, so results name exactly what was attacked."""
    set_mode(module, False)
    return dataclasses.replace(model, module=module, sha256=weights_digest(module, label), warnings=list(model.warnings), trainer=trainer)
