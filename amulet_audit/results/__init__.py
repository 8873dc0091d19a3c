"""Typed audit results and their one JSON form (results.json)."""

from amulet_audit.results.model import (
    SCHEMA_VERSION,
    AuditResult,
    DataInfo,
    DefenseResult,
    Interaction,
    MetricInfo,
    ModelInfo,
    PolicyInfo,
    RequirementResult,
    Run,
    Threshold,
    ToolInfo,
    Verdict,
)
from amulet_audit.results.io import read_results, write_results

__all__ = [
    "SCHEMA_VERSION",
    "AuditResult",
    "DataInfo",
    "DefenseResult",
    "Interaction",
    "MetricInfo",
    "ModelInfo",
    "PolicyInfo",
    "RequirementResult",
    "Run",
    "Threshold",
    "ToolInfo",
    "Verdict",
    "read_results",
    "write_results",
]
