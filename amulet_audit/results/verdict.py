"""Verdicts against thresholds: defined in `amulet_audit.core.verdict` (one home for Verdict and its ranking)."""

from amulet_audit.core.verdict import ORDER, Verdict, combine, judge, overall

__all__ = ["ORDER", "Verdict", "combine", "judge", "overall"]
