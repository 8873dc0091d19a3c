"""Policies: what a regulation requires to be measured, with thresholds and citations."""

from amulet_audit.policy.load import LoadedPolicy, bundled_policies, load_policy
from amulet_audit.policy.schema import AttackRef, Policy, Requirement, ThresholdSpec, json_schema

__all__ = ["AttackRef", "LoadedPolicy", "Policy", "Requirement", "ThresholdSpec", "bundled_policies", "json_schema", "load_policy"]
