"""The policy schema (DESIGN.md, "Policy"). Declarations only: names registry entries, computes nothing."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


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


class Interactions(_Strict):
    defenses: list[str] = Field(default_factory=list)
    tolerance: float = Field(0.02, ge=0)


class Policy(_Strict):
    policy: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    title: str
    version: str = "1"
    description: str = ""
    regulation: Regulation | None = None
    extends: str | None = None
    requirements: list[Requirement] = Field(min_length=1)
    interactions: Interactions | None = None

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
