"""Verdicts: the four outcomes of a requirement, their one ranking, and the rules that produce and combine them
(DESIGN.md, "Verdicts").

One ranking serves every comparison of verdicts: the audit's overall verdict, a report section's verdict, whether
a verdict worsened between two audits (`diff`) or under a defense (the interaction matrix). NOT_APPLICABLE ranks
with INDETERMINATE: neither has been shown to pass ("the audit passes only if every requirement passes").
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


class Verdict(str, Enum):
    """The outcome of one requirement against its threshold."""

    PASS = "pass"
    FAIL = "fail"
    INDETERMINATE = "indeterminate"
    NOT_APPLICABLE = "not_applicable"

    @property
    def rank(self) -> int:
        """How well the requirement is met: 0 FAIL < 1 INDETERMINATE = NOT_APPLICABLE < 2 PASS."""
        return _RANK[self]

    def worse_than(self, other: "Verdict | str") -> bool:
        """True when this verdict ranks below `other` (e.g. PASS -> INDETERMINATE, NOT_APPLICABLE -> FAIL)."""
        return self.rank < Verdict(other).rank


_RANK = {Verdict.FAIL: 0, Verdict.INDETERMINATE: 1, Verdict.NOT_APPLICABLE: 1, Verdict.PASS: 2}

# The order verdicts are listed in (worst first; within a rank, the one with a measured value first).
ORDER: tuple[Verdict, ...] = (Verdict.FAIL, Verdict.INDETERMINATE, Verdict.NOT_APPLICABLE, Verdict.PASS)


def judge(value: float | None, ci: tuple[float, float] | None, op: str, threshold: float, reason: str = "", *,
          bound: str = "", bound_reason: str = "") -> tuple[Verdict, str]:
    """PASS when the whole interval is on the right side; FAIL when the point estimate is on the wrong side;
    INDETERMINATE when the interval straddles the threshold or the sample is too small (`reason` set);
    NOT_APPLICABLE when nothing was measured (`value` None).

    `bound` "upper" (the true value may be lower than measured, e.g. robust accuracy when the attack shows signs
    of gradient masking) or "lower" (it may be higher): a PASS or FAIL that the open side could overturn (upper:
    PASS against `>=`, FAIL against `<=`; lower: PASS against `<=`, FAIL against `>=`) becomes INDETERMINATE with
    `bound_reason`. Raises ValueError for another `bound`."""
    if bound not in ("", "upper", "lower"):
        raise ValueError(f"bound must be 'upper' or 'lower', not {bound!r}")
    verdict, why = _judge(value, ci, op, threshold, reason)
    if not bound or verdict not in (Verdict.PASS, Verdict.FAIL):
        return verdict, why
    passes = verdict is Verdict.PASS
    open_side = (op == ">=") == passes if bound == "upper" else (op == "<=") == passes
    if not open_side:
        return verdict, why
    return Verdict.INDETERMINATE, bound_reason or f"the measured value is only an {bound} bound"


def _judge(value, ci, op, threshold, reason):
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


def combine(verdicts: Iterable[Verdict | str]) -> Verdict:
    """The verdict of a group of requirements (a report section): FAIL if any fails, PASS only if every one
    passes, NOT_APPLICABLE if none applies, INDETERMINATE otherwise (a not-applicable requirement does not pass)."""
    found = [Verdict(v) for v in verdicts]
    if any(v is Verdict.FAIL for v in found):
        return Verdict.FAIL
    if all(v is Verdict.PASS for v in found):
        return Verdict.PASS
    if found and all(v is Verdict.NOT_APPLICABLE for v in found):
        return Verdict.NOT_APPLICABLE
    return Verdict.INDETERMINATE


def overall(verdicts: Iterable[Verdict | str]) -> str:
    """The audit's verdict ("pass", "fail" or "indeterminate"): the audit passes only if every requirement passes;
    an audit where nothing applied has not been shown to pass either."""
    verdict = combine(verdicts)
    return (Verdict.INDETERMINATE if verdict is Verdict.NOT_APPLICABLE else verdict).value


__all__ = ["ORDER", "Verdict", "combine", "judge", "overall"]
