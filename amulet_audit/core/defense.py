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

    def fit(self, ctx: DefenseContext, x: np.ndarray, y: np.ndarray, recipe, seed: int):  # pragma: no cover
        """The defended training procedure on (x, y): returns a trained module (eval mode)."""
        raise NotImplementedError

    def evidence(self, ctx: DefenseContext, module) -> dict[str, Any]:
        """Details about the defended model for the report (e.g. the privacy budget spent)."""
        return {}

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


def defended_handle(model, module, label: str, trainer=None):
    """A ModelHandle for `module`, a defended version of the audited `model` (same architecture for copies).

    Its sha256 is the hash of the defended weights, so results name exactly what was attacked."""
    set_mode(module, False)
    return dataclasses.replace(model, module=module, sha256=weights_digest(module, label), warnings=list(model.warnings), trainer=trainer)
