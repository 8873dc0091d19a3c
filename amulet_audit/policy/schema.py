"""The policy schema (DESIGN.md, "Policy"). Declarations only: names registry entries, computes nothing."""

from __future__ import annotations

import datetime as dt
import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
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
    name: str
    status: Literal["in-force", "adopted", "proposed", "guidance", "standard", "repealed"] = "in-force"
    effective: dt.date | None = None
    url: str | None = None


class AttackRef(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class ThresholdSpec(_Strict):
    min: float | None = None
    max: float | None = None

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
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    title: str = ""
    risk: str
    attack: AttackRef | None = None  # None: the risk's default attack
    metric: str
    threshold: ThresholdSpec
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    cite: list[str] = Field(default_factory=list)
    basis: Literal["legal_rule", "benchmark"] = "benchmark"  # is the threshold set by law, or a recommended benchmark?
    rationale: str = ""


class Recertification(_Strict):
    """How often the audit must be repeated: `amulet-audit diff` and the report compare the audit's age
    (days between the previous and this audit, or up to today) with `period_days`."""

    period_days: int = Field(ge=1)


class DefenseRef(_Strict):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


class Interactions(_Strict):
    """Defenses to apply one at a time; every requirement is measured again on each defended model."""

    defenses: list[str | DefenseRef] = Field(default_factory=list)  # a registry name, or {name, params}
    tolerance: float = Field(0.02, ge=0)  # a defense that worsens an unintended risk's metric by more is flagged

    def refs(self) -> list[DefenseRef]:
        return [DefenseRef(name=d) if isinstance(d, str) else d for d in self.defenses]


class Policy(_Strict):
    policy: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    title: str
    version: str = "1"
    description: str = ""
    regulation: Regulation | None = None
    extends: str | None = None
    requirements: list[Requirement] = Field(min_length=1)
    interactions: Interactions | None = None
    recertification: Recertification | None = None

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
    schema = Policy.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "amulet-audit policy"
    return schema
