"""Recertification: compare a previous audit with this one (pure functions over AuditResult).

A requirement *regresses* when its verdict worsens (pass -> indeterminate/not applicable -> fail, the one ranking
of `core.verdict`), or when its metric moves in the harmful direction by more than both confidence intervals: the
new value lies outside the old interval and the old value outside the new interval, on the worse side. The harmful
direction is the metric's own (`metric_info.higher_is_worse`; in files converted from schema 1.x, read from the
threshold: `>=`, lower is worse; `<=`, higher is worse). Changed artefact digests are reported: a changed
model may be a "substantial modification" (EU AI Act Art. 43(4); C.R.S. 6-1-1703(3)(a): a new impact assessment
within 90 days).
"""

from __future__ import annotations

import datetime as dt

from amulet_audit.results.model import (
    ArtefactChange,
    AuditResult,
    Recertification,
    RequirementChange,
    RequirementResult,
)


def parse_time(iso: str) -> dt.datetime:
    """An ISO 8601 timestamp as an aware datetime (naive ones are taken as UTC)."""
    moment = dt.datetime.fromisoformat(iso)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def days_between(earlier: str, later: str) -> float:
    """Days (fractional) from timestamp `earlier` to `later`."""
    return (parse_time(later) - parse_time(earlier)).total_seconds() / 86400.0


def valid_until(result: AuditResult) -> str | None:
    """The date (ISO) after which `result` is older than its policy's recertification period, or None."""
    period = result.policy.recertification_days
    if not period:
        return None
    return (parse_time(result.finished_at) + dt.timedelta(days=period)).date().isoformat()


def audit_age_days(result: AuditResult, now: dt.datetime | None = None) -> float:
    """How old `result` is at `now` (default: the current time), in days."""
    now = now or dt.datetime.now(dt.timezone.utc)
    return (now - parse_time(result.finished_at)).total_seconds() / 86400.0


def worse_beyond_intervals(old: RequirementResult, new: RequirementResult) -> bool:
    """True when the metric moved in the harmful direction by more than both intervals (see module docstring)."""
    if old.value is None or new.value is None or not old.ci or not new.ci:
        return False
    if not new.metric_info.higher_is_worse:
        return new.value < old.ci[0] and old.value > new.ci[1]
    return new.value > old.ci[1] and old.value < new.ci[0]


def better_beyond_intervals(old: RequirementResult, new: RequirementResult) -> bool:
    """The mirror of `worse_beyond_intervals`: an improvement larger than both intervals."""
    if old.value is None or new.value is None or not old.ci or not new.ci:
        return False
    if not new.metric_info.higher_is_worse:
        return new.value > old.ci[1] and old.value < new.ci[0]
    return new.value < old.ci[0] and old.value > new.ci[1]


def compare_requirement(old: RequirementResult, new: RequirementResult) -> RequirementChange:
    """One requirement present in both audits."""
    threshold_changed = old.threshold != new.threshold or old.metric != new.metric
    old_rank, new_rank = old.verdict.rank, new.verdict.rank
    worse_metric = old.metric == new.metric and worse_beyond_intervals(old, new)
    better_metric = old.metric == new.metric and better_beyond_intervals(old, new)
    reasons = []
    if new_rank < old_rank:
        reasons.append(f"verdict worsened from {old.verdict.value} to {new.verdict.value}")
    if worse_metric:
        reasons.append("the metric worsened beyond both confidence intervals")
    if threshold_changed:
        reasons.append(f"the threshold changed from {old.threshold.op} {old.threshold.value:g} to "
                       f"{new.threshold.op} {new.threshold.value:g}")
    if new_rank < old_rank or worse_metric:
        change = "worsened"
    elif new_rank > old_rank or better_metric:
        change = "improved"
    else:
        change = "unchanged"
    return RequirementChange(
        id=new.id, metric=new.metric,
        old_value=old.value, old_ci=old.ci, old_verdict=old.verdict,
        new_value=new.value, new_ci=new.ci, new_verdict=new.verdict,
        threshold_changed=threshold_changed, change=change, regression=change == "worsened",
        reason="; ".join(reasons),
    )


def _artefacts(old: AuditResult, new: AuditResult) -> list[ArtefactChange]:
    notes = {
        "model": "the model file changed: a possible substantial modification (EU AI Act Art. 43(4); "
                 "C.R.S. 6-1-1703(3)(a): impact assessment within 90 days)",
        "data": "the audit data or its specification changed: values are not measured on the same records",
        "policy": "the policy changed: thresholds or requirements may differ between the audits",
    }
    pairs = (("model", old.model.sha256, new.model.sha256), ("data", old.data.sha256, new.data.sha256),
             ("policy", old.policy.sha256, new.policy.sha256))
    return [ArtefactChange(artefact=a, old_sha256=o, new_sha256=n, changed=o != n, note=notes[a] if o != n else "")
            for a, o, n in pairs]


def compare(old: AuditResult, new: AuditResult, *, baseline_path: str = "") -> Recertification:
    """Compare a previous audit `old` with `new`: per-requirement changes, regressions, artefact digests, and
    the interval between the audits against the new policy's recertification period (days)."""
    old_by_id = {r.id: r for r in old.requirements}
    new_ids = {r.id for r in new.requirements}
    changes = []
    for r in new.requirements:
        if r.id in old_by_id:
            changes.append(compare_requirement(old_by_id[r.id], r))
        else:
            changes.append(RequirementChange(id=r.id, metric=r.metric, new_value=r.value, new_ci=r.ci,
                                             new_verdict=r.verdict, change="added", regression=False,
                                             reason="not in the previous audit"))
    for r in old.requirements:
        if r.id not in new_ids:
            changes.append(RequirementChange(id=r.id, metric=r.metric, old_value=r.value, old_ci=r.ci,
                                             old_verdict=r.verdict, change="removed", regression=False,
                                             reason="not in this audit"))
    interval = days_between(old.finished_at, new.finished_at)
    period = new.policy.recertification_days
    notes = []
    if old.policy.id != new.policy.id:
        notes.append(f"the audits use different policies ({old.policy.id} then {new.policy.id})")
    if (old.seed, old.profile) != (new.seed, new.profile):
        notes.append(f"the audits use different settings (seed {old.seed}, {old.profile} profile then "
                     f"seed {new.seed}, {new.profile} profile): differences within the intervals are sampling noise")
    if old.model_output and new.model_output and old.model_output != new.model_output:
        notes.append(f"the audits read the model's output differently ({old.model_output} then {new.model_output}): "
                     "scores, and the copies trained for the audit, changed meaning")
    if interval < 0:
        notes.append("the baseline finished after this audit: check the order of OLD and NEW")
    lapsed = None if period is None else interval > period
    if lapsed:
        notes.append(f"{interval:.0f} days passed between the audits, more than the {period}-day recertification "
                     "period: the previous audit had expired")
    return Recertification(
        baseline_path=baseline_path,
        baseline_finished_at=old.finished_at,
        baseline_verdict=old.verdict,
        baseline_tool_version=old.tool.version,
        finished_at=new.finished_at,
        interval_days=round(interval, 3),
        period_days=period,
        lapsed=lapsed,
        valid_until=valid_until(new),
        artefacts=_artefacts(old, new),
        requirements=changes,
        regression=any(c.regression for c in changes),
        notes=notes,
    )
