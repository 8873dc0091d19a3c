"""The interaction matrix: how each defense moved every requirement's metric (AMULET, Waheed et al. 2025)."""

from __future__ import annotations

import math

from amulet_audit.results.model import Interaction, RequirementResult
from amulet_audit.core.stats import paired_delta_ci


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
            seed: int = 0) -> list[Interaction]:
    """One row per requirement measured on both models. `paired`: requirement id -> PairedSample for the baseline
    and the defended measurements; where both cover the same records, the delta's interval is a paired bootstrap
    over those records (`reps` replicates), else the normal approximation of `delta_interval`."""
    rows = []
    after = {r.id: r for r in defended}
    for b in baseline:
        d = after.get(b.id)
        if d is None or b.value is None or d.value is None:
            continue
        delta = d.value - b.value
        worse = delta > 0 if b.metric_info.higher_is_worse else delta < 0
        is_intended = b.risk in intended
        verdict_worse = d.verdict.worse_than(b.verdict)
        flagged = not is_intended and worse and (abs(delta) > tolerance or verdict_worse)
        ci, method = paired_delta_ci(paired[0].get(b.id), paired[1].get(b.id), reps=reps, seed=seed,
                                     confidence=confidence), "paired bootstrap"
        if ci is None:
            ci, method = delta_interval(b, d, confidence), "normal approximation"
        rows.append(Interaction(
            defense=defense, risk=b.risk, requirement=b.id, metric=b.metric, baseline=b.value, defended=d.value,
            delta=delta, delta_ci=list(ci) if ci is not None else None, delta_ci_method=method if ci is not None else None,
            worse=worse, intended=is_intended, flagged=flagged,
            baseline_verdict=b.verdict.value, defended_verdict=d.verdict.value, tolerance=tolerance,
        ))
    return rows
