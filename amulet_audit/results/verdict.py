"""Verdicts against thresholds (DESIGN.md, "Verdicts")."""

from __future__ import annotations

from amulet_audit.results.model import Verdict


def judge(value: float | None, ci: tuple[float, float] | None, op: str, threshold: float, reason: str = "") -> tuple[Verdict, str]:
    """PASS when the whole interval is on the right side; FAIL when the point estimate is on the wrong side;
    INDETERMINATE when the interval straddles the threshold or the sample is too small (`reason` set)."""
    if value is None:
        return Verdict.NOT_APPLICABLE, reason or "not measured"
    if reason:
        return Verdict.INDETERMINATE, reason
    ok_point = value >= threshold if op == ">=" else value <= threshold
    if not ok_point:
        return Verdict.FAIL, ""
    if ci is None:
        return Verdict.INDETERMINATE, "no confidence interval"
    low, high = ci
    ok_all = low >= threshold if op == ">=" else high <= threshold
    if ok_all:
        return Verdict.PASS, ""
    return Verdict.INDETERMINATE, "the confidence interval straddles the threshold; a larger sample (--profile thorough) may decide it"


def overall(verdicts: list[Verdict]) -> str:
    """The audit passes only if every requirement passes. Not-applicable requirements do not pass."""
    if any(v == Verdict.FAIL for v in verdicts):
        return "fail"
    if all(v == Verdict.PASS for v in verdicts):
        return "pass"
    return "indeterminate"
