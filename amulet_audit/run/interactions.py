"""The interaction matrix: how each defense moved every requirement's metric (AMULET, Waheed et al. 2025).

A row is flagged only when the change is for the worse on a risk the defense is not meant for, its point exceeds
the policy's tolerance, its interval excludes zero on the worse side, and it survives Benjamini-Hochberg at the
policy's false discovery rate over every unintended row of the audit (`flag`). A row beyond the tolerance that
fails either test is a "possible" worsening, shown apart from the flags.

Intended rows (the defense is meant for the risk) are not worsenings: they carry their p-value for the record but
are outside the tested family (no adjusted p-value), never flagged and never possible."""

from __future__ import annotations

import math

from amulet_audit.results.model import Interaction, RequirementResult
from amulet_audit.core.stats import (
    benjamini_hochberg, bootstrap_p_value, normal_p_value, paired_delta_replicates, percentile_ci,
)

FDR = 0.05  # the default false discovery rate of the flags (policy `interactions.fdr`)


def _z(confidence: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + confidence / 2))


def delta_interval(base: RequirementResult, defended: RequirementResult, confidence: float) -> list[float] | None:
    """Interval of defended - baseline from the two measurements' own intervals (normal approximation: each
    half-width over z gives a standard error; they add in quadrature). The fallback where the two measurements
    cannot be paired record by record (reconstruction similarity per class; a fairness gap or an attribute-inference
    score read on different attributes for the two models). Conservative where their errors are positively
    correlated, as they are for two models measured on the same records."""
    if base.ci is None or defended.ci is None:
        return None
    z = _z(confidence)
    se = math.hypot((base.ci[1] - base.ci[0]) / (2 * z), (defended.ci[1] - defended.ci[0]) / (2 * z))
    delta = defended.value - base.value
    return [delta - z * se, delta + z * se]


def compare(defense: str, intended: tuple[str, ...], baseline: list[RequirementResult], defended: list[RequirementResult],
            *, tolerance: float, confidence: float, paired: tuple[dict, dict] = ({}, {}), reps: int = 1000,
            seed: int = 0, fdr: float = FDR) -> list[Interaction]:
    """One row per requirement measured on both models. `paired`: requirement id -> PairedSample for the baseline
    and the defended measurements; where both cover the same records, the delta's interval and its one-sided
    p-value (for the worse direction) come from one paired bootstrap over those records (`reps` replicates), else
    from the normal approximation of `delta_interval`. The rows are flagged among themselves (`flag`); an audit
    with several defenses flags its whole matrix again, so the false discovery rate holds over all of it."""
    rows = []
    after = {r.id: r for r in defended}
    for b in baseline:
        d = after.get(b.id)
        if d is None or b.value is None or d.value is None:
            continue
        delta = d.value - b.value
        higher_is_worse = b.metric_info.higher_is_worse
        worse = delta > 0 if higher_is_worse else delta < 0
        replicates = paired_delta_replicates(paired[0].get(b.id), paired[1].get(b.id), reps=reps, seed=seed)
        if replicates is not None:
            ci, method = percentile_ci(replicates, confidence), "paired bootstrap"
            p = bootstrap_p_value(replicates, greater=higher_is_worse)
        else:
            ci, method = delta_interval(b, d, confidence), "normal approximation"
            p = normal_p_value(delta, ci, confidence, greater=higher_is_worse) if ci is not None else None
        rows.append(Interaction(
            defense=defense, risk=b.risk, requirement=b.id, metric=b.metric, baseline=b.value, defended=d.value,
            delta=delta, delta_ci=list(ci) if ci is not None else None, delta_ci_method=method if ci is not None else None,
            worse=worse, intended=b.risk in intended, flagged=False, p_value=p if p is None or math.isfinite(p) else None,
            baseline_verdict=b.verdict.value, defended_verdict=d.verdict.value, tolerance=tolerance,
        ))
    return flag(rows, fdr=fdr)


def excludes_zero_on_worse_side(row: Interaction) -> bool:
    """The change's interval lies wholly on the worse side of zero (above it where higher is worse, else below)."""
    if row.delta_ci is None:
        return False
    lo, hi = row.delta_ci
    return lo > 0 if row.delta > 0 else hi < 0


def flag(rows: list[Interaction], *, fdr: float = FDR) -> list[Interaction]:
    """The rows with `flagged`, `possible`, `p_adjusted` and `fdr` set, over all of them as one family: the
    unintended rows with a p-value are tested (Benjamini-Hochberg at `fdr`); a row is flagged when it is worse
    by more than its tolerance, its interval excludes zero on the worse side, and its adjusted p-value is at
    most `fdr`; possible when worse by more than its tolerance but not flagged."""
    tested = [k for k, r in enumerate(rows) if not r.intended and r.p_value is not None]
    adjusted = dict(zip(tested, benjamini_hochberg([rows[k].p_value for k in tested])))
    out = []
    for k, r in enumerate(rows):
        q = adjusted.get(k)
        beyond = not r.intended and r.worse and abs(r.delta) > r.tolerance
        flagged = beyond and q is not None and q <= fdr and excludes_zero_on_worse_side(r)
        out.append(r.model_copy(update={"flagged": flagged, "possible": beyond and not flagged, "p_adjusted": q,
                                        "fdr": fdr}))
    return out
