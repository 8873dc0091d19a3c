"""The contract every defense follows (registered by name through the `amulet_audit.defenses` entry points)."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from amulet_audit.risks.base import Profile


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


@dataclass
class DefenseOutcome:
    """The defended model (a ModelHandle whose `module` is the new model) and evidence for the report."""

    model: Any
    details: dict[str, Any] = field(default_factory=dict)


class Defense:
    """Base class. `__init__` stores keyword arguments unchanged; work happens in `apply`."""

    name: ClassVar[str] = ""
    intended: ClassVar[tuple[str, ...]] = ()  # the risks this defense is meant to reduce
    description: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    parameter_constraints: ClassVar[dict[str, Any]] = {}
    # parameter -> (risk, attack parameter): taken from the policy's first requirement of that risk naming it
    policy_params: ClassVar[dict[str, tuple[str, str]]] = {}

    def __init__(self, **params: Any) -> None:
        self.params = params

    def get_params(self) -> dict[str, Any]:
        return {**self.defaults, **self.params}

    def apply(self, ctx: DefenseContext) -> DefenseOutcome:  # pragma: no cover - abstract
        raise NotImplementedError


def defended_handle(model, module, label: str):
    """A ModelHandle for `module`, a defended version of the audited `model` (same architecture for copies).

    Its sha256 is the hash of the defended weights, so results name exactly what was attacked."""
    h = hashlib.sha256(label.encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    module.eval()
    return dataclasses.replace(model, module=module, sha256=h.hexdigest(), warnings=list(model.warnings))


def clean_accuracy(module, data) -> float:
    from amulet_audit.risks.inference import predict

    return float((predict(module, data.x_holdout) == data.y_holdout).mean())


def retrain(ctx: DefenseContext, key_parts: tuple, x: np.ndarray, y: np.ndarray, *, sample_weight=None, seed_offset: int = 0):
    """A fresh copy of the audited architecture trained with the data spec's recipe on (x, y), cached by content."""
    from amulet_audit.inputs.training import train_model
    from amulet_audit.run.cache import ModelCache, content_key

    seed = ctx.seed + seed_offset
    recipe = ctx.data.spec.training
    key = content_key("retrain", ctx.model.architecture, _architecture_digest(ctx.model), seed, recipe.model_dump(),
                      *key_parts, x, y, sample_weight if sample_weight is not None else "unweighted")
    cache = ctx.cache or ModelCache(None)
    return cache.get_or_train(key, ctx.model.fresh_copy(seed),
                              lambda m: train_model(m, x, y, recipe, seed=seed, sample_weight=sample_weight))


def _architecture_digest(model) -> str:
    """Identifies the architecture (not the weights): names and shapes of every tensor, and TorchScript code."""
    code = ""
    try:
        code = model.module.code
    except Exception:  # plain nn.Modules and exported graphs have no TorchScript code
        pass
    return hashlib.sha256((code + ";".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(model.module.state_dict().items()))).encode()).hexdigest()
