"""The policy schema (DESIGN.md, "Policy"). Declarations only: names registry entries, computes nothing."""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="wrap")
    @classmethod
    def _known_keys(cls, data: Any, handler: Any) -> Any:
        """Refuse an unknown key by name, with the closest valid key(s) suggested."""
        if isinstance(data, dict):
            known = list(cls.model_fields)
            for key in data:
                if isinstance(key, str) and key not in cls.model_fields:
                    close = difflib.get_close_matches(key, known, n=2)
                    hint = (f"did you mean {' or '.join(repr(c) for c in close)}?" if close
                            else f"valid keys here: {', '.join(known)}")
                    raise ValidationError.from_exception_data(cls.__name__, [InitErrorDetails(
                        type=PydanticCustomError("unknown_key", "Unknown key '{key}'; {hint}", {"key": key, "hint": hint}),
                        loc=(key,), input=data[key])])
        return handler(data)


class Regulation(_Strict):
    """The law, standard or guidance the policy implements."""

    name: str = Field(description="Official name, e.g. 'Regulation (EU) 2024/1689 (Artificial Intelligence Act)'.")
    status: Literal["in-force", "adopted", "proposed", "guidance", "standard", "repealed"] = Field(
        "in-force", description="Legal status of the text on the audit date.")
    effective: dt.date | None = Field(None, description="Date (YYYY-MM-DD) from which the obligations apply.")
    url: str | None = Field(None, description="Where the official text is published.")


class AttackRef(_Strict):
    """The attack that measures a requirement, by registry name."""

    name: str = Field(description="Registry name of the attack, e.g. 'pgd', 'lira', 'attribute_inference'.")
    params: dict[str, Any] = Field(default_factory=dict, description=(
        "The attack's parameters (e.g. eps, norm, steps for pgd); unknown names and out-of-range values are refused "
        "by `validate`. Omitted parameters take the attack's defaults."))


class ThresholdSpec(_Strict):
    """The acceptable side of the metric: exactly one of `min` or `max`, in the metric's own units."""

    min: float | None = Field(None, description="The metric must be at least this (e.g. robust accuracy).")
    max: float | None = Field(None, description="The metric must be at most this (e.g. membership-inference AUC).")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ThresholdSpec":
        if (self.min is None) == (self.max is None):
            raise ValueError("give exactly one of 'min' or 'max'")
        return self

    @property
    def op(self) -> str:
        return ">=" if self.min is not None else "<="

    @property
    def value(self) -> float:
        return float(self.min if self.min is not None else self.max)


class Requirement(_Strict):
    """One risk the regulation requires to be assessed, with its metric, threshold and legal source."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description=(
        "Stable identifier (lower case, digits, '-', '_', '.'); overlays (`extends`) override requirements by id, and "
        "recertification diffs compare by id."))
    title: str = Field("", description="One line for the report.")
    risk: str = Field(description=(
        "The risk measured: evasion, poisoning, model_extraction, membership_inference, attribute_inference, "
        "data_reconstruction, distribution_inference or discrimination."))
    attack: AttackRef | None = Field(None, description="The attack that measures it; omitted: the risk's default attack.")
    metric: str = Field(description=(
        "The metric compared with the threshold, reported by the attack (e.g. robust_accuracy, auc, "
        "tpr_at_fpr_0.01, impact_ratio)."))
    threshold: ThresholdSpec = Field(description="The acceptable side of the metric: {min: x} or {max: x}.")
    severity: Literal["low", "medium", "high", "critical"] = Field("medium", description="How serious a failure is.")
    cite: list[str] = Field(default_factory=list, description="Articles or clauses the requirement comes from.")
    basis: Literal["legal_rule", "benchmark"] = Field("benchmark", description=(
        "Whether the threshold is set by law (legal_rule) or is a recommended benchmark the organisation may change."))
    rationale: str = Field("", description="Why this metric and threshold stand for the cited obligation.")


class Recertification(_Strict):
    """How often the audit must be repeated: `amulet-audit diff` and the report compare the audit's age
    (days between the previous and this audit, or up to today) with `period_days`."""

    period_days: int = Field(ge=1, description="Days after which the audit must be repeated.")


class DefenseRef(_Strict):
    """A defense by registry name, with parameters."""

    name: str = Field(description="Registry name, e.g. 'dp_sgd', 'adversarial_training', 'fairness_mitigation'.")
    params: dict[str, Any] = Field(default_factory=dict, description="The defense's parameters (e.g. target_epsilon).")


class Interactions(_Strict):
    """Defenses to apply one at a time; every requirement is measured again on each defended model."""

    defenses: list[str | DefenseRef] = Field(default_factory=list, description=(
        "Defenses applied one at a time to a copy of the model: a registry name, or {name, params}."))
    tolerance: float = Field(0.02, ge=0, description=(
        "A defense that worsens an unintended risk's metric by more than this (in the metric's units), with an "
        "interval for the change that excludes zero, is flagged (if it also survives the fdr control)."))
    fdr: float = Field(0.05, gt=0, lt=1, description=(
        "False discovery rate of the flags: Benjamini-Hochberg on the one-sided p-values of the changes of every "
        "unintended (defense, requirement) pair; a worsening is flagged only if it survives."))

    combinations: list[list[str | DefenseRef]] = Field(default_factory=list, description=(
        "Defenses applied together to one copy, each combination a list of at least two defenses (a registry name, "
        "or {name, params}): the copy is trained with every procedure at once (e.g. DP-SGD with adversarial "
        "examples in each batch), measured like a single defense, and compared with the baseline and with each of "
        "its defenses alone (a defense not listed in `defenses` is applied alone too)."))

    @field_validator("combinations")
    @classmethod
    def _combinations(cls, v):
        for i, combo in enumerate(v):
            if len(combo) < 2:
                raise ValueError(f"combination {i + 1} lists {len(combo)} defense(s); a combination needs at least two")
        return v

    def refs(self) -> list[DefenseRef]:
        return [DefenseRef(name=d) if isinstance(d, str) else d for d in self.defenses]

    def combination_refs(self) -> list[list[DefenseRef]]:
        return [[DefenseRef(name=d) if isinstance(d, str) else d for d in combo] for combo in self.combinations]


class Policy(_Strict):
    """An amulet-audit policy: the risks a regulation requires to be assessed, with thresholds and citations."""

    policy: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Policy id, e.g. 'eu-ai-act'.")
    title: str = Field(description="Title shown on the report's cover.")
    version: str = Field("1", description="The policy's own version, recorded in results.json.")
    description: str = Field("", description="What the regulation requires, in a few sentences.")
    regulation: Regulation | None = Field(None, description="The law, standard or guidance implemented.")
    extends: str | None = Field(None, description=(
        "Another policy (bundled name or path) whose requirements this one inherits; requirements merge by id."))
    requirements: list[Requirement] = Field(min_length=1, description="The requirements, at least one.")
    interactions: Interactions | None = Field(None, description=(
        "Defenses to apply, each measured against every requirement (unintended interactions)."))
    recertification: Recertification | None = Field(None, description="How often the audit must be repeated.")

    @model_validator(mode="after")
    def _unique_ids(self) -> "Policy":
        seen = set()
        for r in self.requirements:
            if r.id in seen:
                raise ValueError(f"requirement id '{r.id}' appears twice")
            seen.add(r.id)
        return self


def json_schema() -> dict[str, Any]:
    """JSON Schema of a policy file, for editors (`amulet-audit validate --schema`)."""
    from amulet_audit.core import registry
    from amulet_audit.core.attack import RISKS

    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "amulet-audit policy"
    # the registered names, so an editor completes and checks them (plugins included)
    defs = schema["$defs"]
    defs["Requirement"]["properties"]["risk"]["enum"] = sorted(RISKS)
    defs["Requirement"]["properties"]["metric"]["enum"] = sorted(registry.metrics())
    defs["AttackRef"]["properties"]["name"]["enum"] = sorted(registry.attacks())
    defs["DefenseRef"]["properties"]["name"]["enum"] = sorted(registry.defenses())
    return schema
