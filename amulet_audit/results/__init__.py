"""Typed audit results and their one JSON form (results.json)."""

from amulet_audit.results.model import (
    SCHEMA_VERSION,
    AuditResult,
    DataInfo,
    DefenseResult,
    Interaction,
    ModelInfo,
    PolicyInfo,
    RequirementResult,
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
    "ModelInfo",
    "PolicyInfo",
    "RequirementResult",
    "Threshold",
    "ToolInfo",
    "Verdict",
    "read_results",
    "write_results",
]
