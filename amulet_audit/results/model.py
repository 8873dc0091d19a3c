"""The AuditResult schema: the shape of results.json (DESIGN.md, "results.json").

Reports, `render` and `diff` read only this. Bump SCHEMA_VERSION on any incompatible change.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.1"


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
    recertification_days: int | None = None  # the policy's recertification period (days), if it sets one


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
    basis: str = ""  # "legal_rule" or "benchmark": who set the threshold (from the policy)
    rationale: str = ""
    details: dict[str, Any] = Field(default_factory=dict)  # attack-specific evidence for charts and tables


class Interaction(_Strict):
    """One (defense, requirement) cell of the interaction matrix: the requirement's metric on the audited model
    (`baseline`) and on the defended model (`defended`), measured with the same attack, seed and budget."""

    defense: str
    risk: str
    requirement: str = ""
    metric: str
    baseline: float
    defended: float
    delta: float  # defended - baseline
    delta_ci: list[float] | None = None  # interval of the delta (see run/interactions.py)
    delta_ci_method: Literal["paired bootstrap", "normal approximation"] | None = None
    worse: bool  # the risk grew (direction-aware)
    intended: bool  # the defense is meant for this risk
    flagged: bool  # unintended, and worse by more than the tolerance or its verdict worsened
    baseline_verdict: str = ""
    defended_verdict: str = ""
    tolerance: float = 0.0


class DefenseResult(_Strict):
    """A defense applied to a copy of the audited model, and everything measured on the defended model."""

    name: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    intended: list[str] = Field(default_factory=list)
    model_sha256: str = ""  # of the defended weights
    clean_accuracy_before: float | None = None  # utility cost: holdout accuracy of the audited model
    clean_accuracy_after: float | None = None  # and of the defended one
    details: dict[str, Any] = Field(default_factory=dict)
    requirements: list[RequirementResult] = Field(default_factory=list)
    provider: str = ""
    seconds: float = 0.0
    not_applicable: str = ""  # why the defense could not be applied to these inputs (then nothing was measured)


class RequirementChange(_Strict):
    """One requirement compared between a previous audit (old) and this one (new)."""

    id: str
    metric: str
    old_value: float | None = None
    old_ci: list[float] | None = None
    old_verdict: Verdict | None = None  # None: the requirement is new
    new_value: float | None = None
    new_ci: list[float] | None = None
    new_verdict: Verdict | None = None  # None: the requirement was dropped
    threshold_changed: bool = False
    change: Literal["improved", "unchanged", "worsened", "added", "removed"]
    regression: bool
    reason: str = ""


class ArtefactChange(_Strict):
    """Whether an audited artefact (model, data, policy) is the same file as in the previous audit."""

    artefact: Literal["model", "data", "policy"]
    old_sha256: str
    new_sha256: str
    changed: bool
    note: str = ""


class Recertification(_Strict):
    """This audit compared with a previous one (`--baseline OLD.json`, `amulet-audit diff`)."""

    baseline_path: str = ""
    baseline_finished_at: str
    baseline_verdict: str
    baseline_tool_version: str = ""
    finished_at: str
    interval_days: float  # days between the two audits
    period_days: int | None = None  # the (new) policy's recertification period
    lapsed: bool | None = None  # the interval exceeded the period: the previous audit had expired
    valid_until: str | None = None  # this audit's finish date + period (ISO date)
    artefacts: list[ArtefactChange] = Field(default_factory=list)
    requirements: list[RequirementChange] = Field(default_factory=list)
    regression: bool
    notes: list[str] = Field(default_factory=list)


class AuditResult(_Strict):
    schema_version: str = SCHEMA_VERSION
    tool: ToolInfo
    verdict: Literal["pass", "fail", "indeterminate"]
    model: ModelInfo
    data: DataInfo
    policy: PolicyInfo
    requirements: list[RequirementResult]
    interactions: list[Interaction] = Field(default_factory=list)
    defenses: list[DefenseResult] = Field(default_factory=list)
    seed: int
    profile: str = "standard"
    confidence: float = 0.95
    environment: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    finished_at: str
    timings: dict[str, float] = Field(default_factory=dict)  # seconds
    recertification: Recertification | None = None  # comparison with a previous audit (--baseline)
    # Set by every rendering: what the report cannot show as these results hold it, e.g. characters of the data and
    # policy names that no installed font has, which print as boxes (amulet_audit.report.fonts).
    report_warnings: list[str] = Field(default_factory=list)
