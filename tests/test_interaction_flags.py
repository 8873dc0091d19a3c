"""Interaction flags that mean something (issue 12 §4): a flag needs an interval for the change that excludes zero
on the worse side, a point beyond the tolerance, and Benjamini-Hochberg over the whole matrix. Fast: `compare` on
synthetic measurements, no audit."""

from __future__ import annotations

import numpy as np
import pytest

from amulet_audit.core.attack import rate
from amulet_audit.core.stats import (
    benjamini_hochberg, bootstrap_p_value, normal_p_value, paired_delta_ci, paired_delta_replicates,
)
from amulet_audit.core.verdict import Verdict
from amulet_audit.results.model import MetricInfo, RequirementResult, Threshold
from amulet_audit.run.interactions import compare, flag

N = 1000
RECORDS = np.arange(N)


def _req(rid: str, measurement, *, risk: str = "evasion", higher_is_worse: bool = False) -> RequirementResult:
    return RequirementResult(
        id=rid, risk=risk, attack="pgd", metric="robust_accuracy", value=measurement.value, ci=list(measurement.ci),
        n=measurement.n, threshold=Threshold(op="<=" if higher_is_worse else ">=", value=0.5), verdict=Verdict.PASS,
        run="r1", metric_info=MetricInfo(higher_is_worse=higher_is_worse))


def _pair(base_hits, other_hits):
    return (rate(base_hits, RECORDS, confidence=0.95), rate(other_hits, RECORDS, confidence=0.95))


def _case(flip_down: int, flip_up: int, seed: int = 0):
    """A baseline with 70% hits and a defended model that loses `flip_down` of them and gains `flip_up`."""
    rng = np.random.default_rng(seed)
    base = rng.random(N) < 0.7
    other = base.copy()
    other[rng.choice(np.flatnonzero(base), flip_down, replace=False)] = False
    other[rng.choice(np.flatnonzero(~base), flip_up, replace=False)] = True
    return _pair(base, other)


def _compare(cases: dict, *, intended=(), tolerance=0.02, fdr=0.05, higher_is_worse=False, risk="evasion"):
    baseline = [_req(k, b, risk=risk, higher_is_worse=higher_is_worse) for k, (b, _) in cases.items()]
    defended = [_req(k, d, risk=risk, higher_is_worse=higher_is_worse) for k, (_, d) in cases.items()]
    paired = ({k: b.paired for k, (b, _) in cases.items()}, {k: d.paired for k, (_, d) in cases.items()})
    rows = compare("dp_sgd", intended, baseline, defended, tolerance=tolerance, confidence=0.95, paired=paired,
                   reps=400, seed=0, fdr=fdr)
    return {r.requirement: r for r in rows}


def test_a_change_whose_interval_includes_zero_is_never_flagged_but_possible_beyond_the_tolerance():
    # 120 records lost, 95 gained: -0.025, beyond the 0.02 tolerance, but noisy
    rows = _compare({"noisy": _case(120, 95)}, tolerance=0.02)
    row = rows["noisy"]
    assert row.worse and abs(row.delta) > row.tolerance
    assert row.delta_ci[0] <= 0 <= row.delta_ci[1]
    assert not row.flagged and row.possible
    assert row.p_value is not None and row.p_value > 0.025 and row.fdr == 0.05


def test_a_clear_worsening_beyond_the_tolerance_is_flagged_and_its_interval_excludes_zero():
    rows = _compare({"clear": _case(80, 0)}, tolerance=0.02)
    row = rows["clear"]
    assert row.delta == pytest.approx(-0.08)
    assert row.delta_ci[1] < 0 and row.flagged and not row.possible
    assert row.p_value == 0.0 and row.p_adjusted == 0.0


def test_a_significant_change_within_the_tolerance_is_neither_flagged_nor_possible():
    rows = _compare({"small": _case(15, 0)}, tolerance=0.02)
    row = rows["small"]
    assert row.delta_ci[1] < 0 and row.p_value < 0.05
    assert not row.flagged and not row.possible


def test_intended_rows_are_not_tested_flagged_or_possible():
    rows = _compare({"meant": _case(80, 0)}, intended=("evasion",))
    row = rows["meant"]
    assert row.intended and row.worse and row.p_value is not None
    assert row.p_adjusted is None and not row.flagged and not row.possible


def test_higher_is_worse_direction_and_the_p_value_of_an_improvement():
    # for a metric where higher is worse, gaining hits is the worse direction; losing them is an improvement
    rows = _compare({"up": _case(0, 80), "down": _case(80, 0, seed=1)}, higher_is_worse=True, risk="membership_inference")
    assert rows["up"].worse and rows["up"].flagged and rows["up"].delta_ci[0] > 0
    assert not rows["down"].worse and rows["down"].p_value == 1.0 and not rows["down"].flagged


def test_flags_imply_an_interval_that_excludes_zero_over_many_random_changes():
    cases = {f"r{k}": _case(int(d), int(u), seed=k)
             for k, (d, u) in enumerate(np.random.default_rng(1).integers(0, 70, (30, 2)))}
    rows = _compare(cases)
    assert any(r.flagged for r in rows.values()) and any(r.possible for r in rows.values())
    for r in rows.values():
        if r.flagged:
            assert r.worse and abs(r.delta) > r.tolerance and r.p_adjusted <= r.fdr
            assert (r.delta_ci[1] < 0) if r.delta < 0 else (r.delta_ci[0] > 0)
        assert not (r.flagged and r.possible)
        assert r.possible == (r.worse and abs(r.delta) > r.tolerance and not r.flagged)
        assert r.p_adjusted >= r.p_value


def test_bh_over_the_whole_matrix_can_unflag_a_row_one_defense_alone_would_flag():
    rows = [r.model_copy(update={"p_value": 0.01}) for r in _compare({"clear": _case(80, 0)}).values()]
    assert flag(rows, fdr=0.05)[0].flagged  # significant alone
    noise = [rows[0].model_copy(update={"requirement": f"n{k}", "p_value": 0.9}) for k in range(400)]
    again = flag(rows + noise, fdr=0.05)
    assert not again[0].flagged and again[0].possible and again[0].p_adjusted > 0.05


def test_benjamini_hochberg_gives_the_textbook_result():
    # Benjamini & Hochberg (1995), section 4: 15 p-values, q = 0.05 rejects the four smallest
    p = [0.0001, 0.0004, 0.0019, 0.0095, 0.0201, 0.0278, 0.0298, 0.0344, 0.0459, 0.3240, 0.4262, 0.5719, 0.6528,
         0.7590, 1.0000]
    adjusted = benjamini_hochberg(p)
    assert [a <= 0.05 for a in adjusted] == [True] * 4 + [False] * 11
    # adjusted values: p_(i) m / i, monotone from the top, in the input order
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert benjamini_hochberg([0.5, 0.9]) == pytest.approx([0.9, 0.9])
    assert benjamini_hochberg([]) == []


def test_the_p_value_comes_from_the_same_replicates_as_the_interval():
    base, other = _case(40, 10)
    values = paired_delta_replicates(base.paired, other.paired, reps=300, seed=3)
    lo, hi = paired_delta_ci(base.paired, other.paired, reps=300, seed=3)
    assert (np.quantile(values, 0.025), np.quantile(values, 0.975)) == pytest.approx((lo, hi))
    p = bootstrap_p_value(values, greater=False)
    assert p == pytest.approx(np.mean(values >= 0))
    assert (p < 0.025) == (hi < 0)
    assert bootstrap_p_value(np.zeros(10), greater=True) == 1.0  # ties count against the change


def test_normal_p_value_matches_its_interval():
    # an interval [0, 0.2] at 95% around 0.1: z = 1.96, one-sided p = 0.025
    assert normal_p_value(0.1, [0.0, 0.2], 0.95, greater=True) == pytest.approx(0.025)
    assert normal_p_value(0.1, [0.0, 0.2], 0.95, greater=False) == pytest.approx(0.975)
    assert normal_p_value(0.1, [0.1, 0.1], 0.95, greater=True) == 0.0
