"""Intervals and verdict rules (DESIGN.md, "Verdicts")."""

from __future__ import annotations

import numpy as np
import pytest

from amulet_audit.results.model import Verdict
from amulet_audit.results.verdict import judge, overall
from amulet_audit.core.stats import binomial_ci, bootstrap_ci


def test_clopper_pearson_matches_known_values():
    lo, hi = binomial_ci(5, 10, 0.95)
    assert lo == pytest.approx(0.1871, abs=1e-4) and hi == pytest.approx(0.8129, abs=1e-4)
    assert binomial_ci(0, 20)[0] == 0.0 and binomial_ci(20, 20)[1] == 1.0


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=50), rng.normal(size=5000)
    ci_small = bootstrap_ci(lambda i: small[i].mean(), len(small), reps=500, seed=1)
    ci_large = bootstrap_ci(lambda i: large[i].mean(), len(large), reps=500, seed=1)
    assert ci_small[0] < small.mean() < ci_small[1]
    assert ci_large[1] - ci_large[0] < (ci_small[1] - ci_small[0]) / 5


@pytest.mark.parametrize("value, ci, op, thr, expected", [
    (0.8, (0.75, 0.85), ">=", 0.6, Verdict.PASS),
    (0.65, (0.55, 0.75), ">=", 0.6, Verdict.INDETERMINATE),
    (0.55, (0.5, 0.62), ">=", 0.6, Verdict.FAIL),
    (0.05, (0.02, 0.08), "<=", 0.1, Verdict.PASS),
    (0.08, (0.05, 0.12), "<=", 0.1, Verdict.INDETERMINATE),
    (0.12, (0.09, 0.15), "<=", 0.1, Verdict.FAIL),
])
def test_verdict_rules(value, ci, op, thr, expected):
    assert judge(value, ci, op, thr)[0] == expected


def test_small_sample_is_indeterminate_and_missing_value_not_applicable():
    verdict, reason = judge(0.0, (0.0, 0.01), "<=", 0.05, "needs at least 1,000 non-members")
    assert verdict == Verdict.INDETERMINATE and "1,000" in reason
    assert judge(None, None, ">=", 0.8, "no sensitive attribute")[0] == Verdict.NOT_APPLICABLE


def test_audit_passes_only_if_every_requirement_passes():
    assert overall([Verdict.PASS, Verdict.PASS]) == "pass"
    assert overall([Verdict.PASS, Verdict.INDETERMINATE]) == "indeterminate"
    assert overall([Verdict.PASS, Verdict.NOT_APPLICABLE]) == "indeterminate"
    assert overall([Verdict.FAIL, Verdict.INDETERMINATE]) == "fail"
    assert overall([Verdict.NOT_APPLICABLE]) == "indeterminate"  # nothing applied: not shown to pass either


def test_one_ranking_of_verdicts_where_not_applicable_ranks_with_indeterminate():
    from amulet_audit.core.verdict import ORDER, combine
    from amulet_audit.results import Verdict as reexported

    assert reexported is Verdict  # results re-exports the one Verdict
    assert Verdict.PASS.worse_than(Verdict.PASS) is False
    assert Verdict.NOT_APPLICABLE.worse_than(Verdict.PASS) and Verdict.INDETERMINATE.worse_than("pass")
    assert not Verdict.NOT_APPLICABLE.worse_than(Verdict.INDETERMINATE)
    assert not Verdict.INDETERMINATE.worse_than(Verdict.NOT_APPLICABLE)
    assert Verdict.FAIL.worse_than(Verdict.NOT_APPLICABLE)
    assert [v.rank for v in ORDER] == sorted(v.rank for v in ORDER)  # listed worst first
    # a group of requirements (a report section) is judged by the audit's rule
    assert combine([Verdict.PASS, Verdict.NOT_APPLICABLE]) is Verdict.INDETERMINATE
    assert combine([Verdict.NOT_APPLICABLE, Verdict.NOT_APPLICABLE]) is Verdict.NOT_APPLICABLE
    assert combine([Verdict.PASS, Verdict.FAIL, Verdict.NOT_APPLICABLE]) is Verdict.FAIL
    assert combine(["pass", "pass"]) is Verdict.PASS


def test_paired_bootstrap_of_a_delta_is_far_tighter_than_independent_intervals_when_models_agree():
    """Two models right on mostly the same records: pairing cancels the record-to-record variation they share."""
    from amulet_audit.core.attack import PairedSample, rate
    from amulet_audit.run.interactions import _z
    from amulet_audit.core.stats import paired_delta_ci

    rng = np.random.default_rng(0)
    n = 1000
    records = np.arange(n) * 3  # record names need not be 0..n-1
    base_hits = rng.random(n) < 0.7
    flips = rng.random(n) < 0.04  # the defended model differs on about 4% of the records
    other_hits = base_hits ^ flips
    base, other = rate(base_hits, records, confidence=0.95), rate(other_hits, records, confidence=0.95)
    ci = paired_delta_ci(base.paired, other.paired, reps=500, seed=0)
    delta = other.value - base.value
    assert ci[0] <= delta <= ci[1]
    z = _z(0.95)
    independent = 2 * z * np.hypot((base.ci[1] - base.ci[0]) / (2 * z), (other.ci[1] - other.ci[0]) / (2 * z))
    assert ci[1] - ci[0] < independent / 2
    # the same model twice: the delta is exactly zero in every replicate
    assert paired_delta_ci(base.paired, base.paired, reps=50, seed=0) == (0.0, 0.0)
    # other records, or another statistic: cannot be paired
    moved = PairedSample(records + 1, other.paired.arrays, other.paired.statistic)
    assert paired_delta_ci(base.paired, moved, reps=50, seed=0) is None
    assert paired_delta_ci(base.paired, PairedSample(records, {"x": other_hits}, np.mean), reps=50, seed=0) is None


def test_every_registered_metric_declares_its_unit():
    from amulet_audit.core import registry

    units = {name: registry.metric(name).unit for name in registry.metrics()}
    assert set(units.values()) <= {"fraction", "difference", "ratio", "auc"}, units
    assert units["impact_ratio"] == "ratio" and units["auc"] == "auc" and units["robust_accuracy"] == "fraction"
