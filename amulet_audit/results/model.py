"""The AuditResult schema: the shape of results.json (DESIGN.md, "results.json").

Reports, `render` and `diff` read only this. Bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.0"


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INDETERMINATE = "indeterminate"
    NOT_APPLICABLE = "not_applicable"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolInfo(_Strict):
    name: str = "amulet-audit"
    version: str


class ModelInfo(_Strict):
    path: str
    sha256: str
    format: Literal["torchscript", "export", "state_dict", "pickle"]
    parameters: int
    architecture: str = ""
    warnings: list[str] = Field(default_factory=list)


class DataInfo(_Strict):
    path: str
    sha256: str
    name: str = ""
    files: dict[str, str] = Field(default_factory=dict)  # data file path -> sha256
    n_train: int
    n_holdout: int
    n_features: int = 0
    classes: list[str] = Field(default_factory=list)
    positive_label: str | None = None
    sensitive: list[str] = Field(default_factory=list)


class PolicyInfo(_Strict):
    id: str
    sha256: str
    title: str
    path: str = ""
    regulation: dict[str, Any] = Field(default_factory=dict)


class Threshold(_Strict):
    op: Literal[">=", "<="]
    value: float


class RequirementResult(_Strict):
    id: str
    title: str = ""
    risk: str
    attack: str
    metric: str
    value: float | None
    ci: list[float] | None  # [low, high] at `confidence`
    n: int
    threshold: Threshold
    verdict: Verdict
    reason: str = ""  # why indeterminate / not applicable
    cite: list[str] = Field(default_factory=list)
    severity: str = "medium"
    params: dict[str, Any] = Field(default_factory=dict)  # the attack configuration that produced the value
    details: dict[str, Any] = Field(default_factory=dict)  # attack-specific evidence for charts and tables


class Interaction(_Strict):
    defense: str
    risk: str
    requirement: str = ""
    metric: str
    baseline: float
    defended: float
    delta: float
    worse: bool
    intended: bool
    flagged: bool


class AuditResult(_Strict):
    schema_version: str = SCHEMA_VERSION
    tool: ToolInfo
    verdict: Literal["pass", "fail", "indeterminate"]
    model: ModelInfo
    data: DataInfo
    policy: PolicyInfo
    requirements: list[RequirementResult]
    interactions: list[Interaction] = Field(default_factory=list)
    seed: int
    profile: str = "standard"
    confidence: float = 0.95
    environment: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    finished_at: str
    timings: dict[str, float] = Field(default_factory=dict)  # seconds
