"""Fairness where a rate is undefined (0/0), intervals that contain their own point, and fairness mitigation aimed
at the attribute the audit found worst. Fixtures are small synthetic tables whose decisions are fixed by design (a
linear model reading one feature), so every expected number is computed here independently of the tool."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from amulet_audit.core.defense import DefenseNotApplicable
from amulet_audit.defenses.fairness import FairnessMitigation
from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.results.verdict import Verdict, judge
from amulet_audit.risks.discrimination import GroupFairness, _summaries

from conftest import context

METRICS = ("demographic_parity_difference", "impact_ratio", "equalized_odds_difference", "accuracy_gap")


def write_inputs(folder, y, decision, sensitive: dict[str, np.ndarray], *, x=None, epochs: int = 1):
    """A table whose holdout split has labels `y` (bool), the model's favourable decisions `decision` (bool) and the
    sensitive columns; the model is a scripted linear layer whose decision is feature `d` > 0 (d = +-1). The train
    split repeats the holdout records. Returns (model, data)."""
    import pandas as pd
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    n = len(y)
    d = np.where(decision, 1.0, -1.0)
    df = pd.DataFrame({"d": np.concatenate([d, d]), "z": np.concatenate([x, x]) if x is not None else 0.0})
    for name, col in sensitive.items():
        df[name] = np.concatenate([col, col])
    df["label"] = np.concatenate([y, y]).astype(int)
    df["split"] = ["train"] * n + ["holdout"] * n
    df.to_csv(folder / "data.csv", index=False)
    lin = torch.nn.Linear(2, 2)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        lin.bias.zero_()
    torch.jit.save(torch.jit.script(lin.eval()), folder / "model.pt")
    spec = {"name": "fixed-decisions", "source": {"format": "csv", "path": "data.csv"},
            "split": {"column": "split", "train": "train", "holdout": "holdout"}, "features": ["d", "z"],
            "target": "label", "positive_label": 1, "sensitive": list(sensitive),
            "training": {"epochs": epochs, "batch_size": 64, "lr": 0.05}}
    (folder / "model.data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_model(folder / "model.pt"), load_data(folder / "model.data.yaml")


def draw(rng, sizes: dict[str, int], p_pos: dict[str, float], tpr: dict[str, float], fpr: dict[str, float]):
    """Group labels, labels and decisions with exactly the given group sizes and (rounded) shares of positives, of
    positives selected (TPR) and of negatives selected (FPR), in shuffled order."""
    groups, ys, ds = [], [], []
    for g, k in sizes.items():
        pos = round(p_pos[g] * k)
        tp, fp = round(tpr[g] * pos), round(fpr[g] * (k - pos))
        groups += [g] * k
        ys += [True] * pos + [False] * (k - pos)
        ds += [True] * tp + [False] * (pos - tp) + [True] * fp + [False] * (k - pos - fp)
    order = rng.permutation(len(ys))
    return np.array(groups, dtype=str)[order], np.array(ys)[order], np.array(ds)[order]


def rates_by_hand(groups, y, decision) -> dict[str, dict[str, float | None]]:
    """TPR, FPR, selection rate and accuracy per group with plain counting (None for 0/0)."""
    out = {}
    for g in sorted(set(groups)):
        idx = [i for i in range(len(y)) if groups[i] == g]
        pos = [i for i in idx if y[i]]
        neg = [i for i in idx if not y[i]]
        out[g] = {"tpr": sum(decision[i] for i in pos) / len(pos) if pos else None,
                  "fpr": sum(decision[i] for i in neg) / len(neg) if neg else None,
                  "sel": sum(decision[i] for i in idx) / len(idx),
                  "acc": sum(decision[i] == y[i] for i in idx) / len(idx)}
    return out


def gap(values) -> float:
    defined = [v for v in values if v is not None]
    return max(defined) - min(defined)


def assert_inside(out):
    """Every measured fairness metric lies inside its own interval."""
    for m in METRICS:
        meas = out.metrics[m]
        if meas.value is None:
            continue
        assert meas.ci is not None and meas.ci[0] <= meas.value <= meas.ci[1], (m, meas.value, meas.ci)


def test_group_without_positives_is_left_out_of_equalized_odds(tmp_path):
    """Region C never had a favourable outcome: its TPR is 0/0. The equalized-odds difference is the larger of the
    TPR gap over A and B and the FPR gap over A, B and C, not C's 'TPR 0' against B's ~0.8."""
    rng = np.random.default_rng(9)
    groups, y, decision = draw(rng, {"A": 500, "B": 500, "C": 70}, {"A": 0.5, "B": 0.5, "C": 0.0},
                               {"A": 0.78, "B": 0.81, "C": 0.0}, {"A": 0.13, "B": 0.14, "C": 0.25})
    assert not y[groups == "C"].any() and decision[groups == "C"].any()
    model, data = write_inputs(tmp_path, y, decision, {"region": groups})
    out = GroupFairness().run(context(model, data))

    hand = rates_by_hand(groups, y, decision)
    expected = max(gap(r["tpr"] for r in hand.values()), gap(r["fpr"] for r in hand.values()))
    as_zero = max(gap([r["tpr"] or 0.0 for r in hand.values()]), gap(r["fpr"] for r in hand.values()))
    assert as_zero > 0.6 and expected < 0.15  # the fixture tells the two conventions apart
    eo = out.metrics["equalized_odds_difference"]
    assert eo.value == pytest.approx(expected, abs=1e-12)
    assert eo.ci[0] <= eo.value <= eo.ci[1] and eo.ci[1] < 0.5  # the interval describes the same statistic
    verdict, _ = judge(eo.value, eo.ci, "<=", 0.15)
    assert verdict in (Verdict.PASS, Verdict.INDETERMINATE)
    rows = {r["group"]: r for r in out.details["by_attribute"]["region"]["groups"]}
    assert rows["C"]["tpr"] is None and "0/0" in rows["C"]["undefined"]["tpr"]
    assert rows["C"]["fpr"] == pytest.approx(hand["C"]["fpr"]) and "undefined" not in rows["A"]
    # the other summaries are ordinary: every group has records
    assert out.metrics["demographic_parity_difference"].value == pytest.approx(gap(r["sel"] for r in hand.values()))
    assert out.metrics["accuracy_gap"].value == pytest.approx(gap(r["acc"] for r in hand.values()))
    assert_inside(out)


def test_group_without_negatives_is_left_out_of_the_fpr_gap(tmp_path):
    rng = np.random.default_rng(3)
    groups, y, decision = draw(rng, {"A": 300, "B": 300, "C": 50}, {"A": 0.5, "B": 0.5, "C": 1.0},
                               {"A": 0.7, "B": 0.75, "C": 0.9}, {"A": 0.2, "B": 0.1, "C": 0.0})
    model, data = write_inputs(tmp_path, y, decision, {"g": groups})
    out = GroupFairness().run(context(model, data))
    hand = rates_by_hand(groups, y, decision)
    assert hand["C"]["fpr"] is None
    expected = max(gap(r["tpr"] for r in hand.values()), gap(r["fpr"] for r in hand.values()))
    assert out.metrics["equalized_odds_difference"].value == pytest.approx(expected, abs=1e-12)
    rows = {r["group"]: r for r in out.details["by_attribute"]["g"]["groups"]}
    assert rows["C"]["fpr"] is None and "false-positive rate is 0/0" in rows["C"]["undefined"]["fpr"]
    assert_inside(out)


def test_equalized_odds_not_measurable_when_one_group_has_positives(tmp_path):
    """Only A has favourable ground truth: no two TPRs to compare, so no value (NOT_APPLICABLE with the reason),
    never a number that treats 0/0 as 0."""
    rng = np.random.default_rng(4)
    groups, y, decision = draw(rng, {"A": 200, "B": 200}, {"A": 0.5, "B": 0.0},
                               {"A": 0.8, "B": 0.0}, {"A": 0.1, "B": 0.3})
    model, data = write_inputs(tmp_path, y, decision, {"g": groups})
    out = GroupFairness().run(context(model, data))
    eo = out.metrics["equalized_odds_difference"]
    assert eo.value is None and eo.ci is None and "true-positive" in eo.reason
    assert judge(eo.value, eo.ci, "<=", 0.1, eo.reason)[0] == Verdict.NOT_APPLICABLE
    assert "equalized_odds_difference" in out.details["by_attribute"]["g"]["undefined"]
    assert out.details["by_attribute"]["g"]["equalized_odds_difference"] is None
    assert out.metrics["demographic_parity_difference"].value is not None
    assert_inside(out)


def test_impact_ratio_undefined_when_no_group_is_selected(tmp_path):
    rng = np.random.default_rng(5)
    groups, y, decision = draw(rng, {"A": 100, "B": 100}, {"A": 0.5, "B": 0.4},
                               {"A": 0.0, "B": 0.0}, {"A": 0.0, "B": 0.0})
    model, data = write_inputs(tmp_path, y, decision, {"g": groups})
    out = GroupFairness().run(context(model, data))
    ir = out.metrics["impact_ratio"]
    assert ir.value is None and "0/0" in ir.reason
    dp = out.metrics["demographic_parity_difference"]
    assert dp.value == 0.0 and dp.ci[0] <= 0.0 <= dp.ci[1]
    rows = out.details["by_attribute"]["g"]["groups"]
    assert all(r["impact_ratio"] is None and "impact_ratio" in r["undefined"] for r in rows)


def test_bootstrap_replicates_use_the_same_convention():
    """`_summaries` (point estimate and every replicate): a group without positives drops out of the TPR gap, one
    without negatives out of the FPR gap; fewer than two defined groups: NaN (the replicate is dropped)."""
    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    yt = np.array([1, 1, 0, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    yp = np.array([1, 0, 1, 0, 1, 1, 0, 0, 1, 0], dtype=bool)
    s = _summaries(codes, 3, yt, yp)
    # TPR: A 1/2, B 1/1, C undefined; FPR: A 1/2, B 1/3, C 1/2
    assert s["equalized_odds_difference"] == pytest.approx(max(1.0 - 0.5, 0.5 - 1 / 3))
    only_a = _summaries(codes, 3, yt & (codes == 0), yp)
    assert np.isnan(only_a["equalized_odds_difference"])
    none_selected = _summaries(codes, 3, yt, np.zeros_like(yp))
    assert np.isnan(none_selected["impact_ratio"]) and none_selected["demographic_parity_difference"] == 0.0


@pytest.mark.parametrize("seed", range(6))
def test_point_estimate_lies_inside_its_interval(tmp_path, seed):
    """For every fairness metric: equal rates (where the percentile interval of a max - min excludes the point),
    unequal rates, small groups, a group without positives, and intersections."""
    rng = np.random.default_rng(100 + seed)
    k = int(rng.integers(2, 5))
    names = "ABCD"[:k]
    sizes = {g: int(rng.integers(35, 250)) for g in names}
    equal = seed % 2 == 0
    base = float(rng.uniform(0.2, 0.6))
    p_pos = {g: base if equal else float(rng.uniform(0.1, 0.8)) for g in names}
    if seed in (1, 4):
        p_pos[names[-1]] = 0.0  # a group without positives
    tpr = {g: 0.7 if equal else float(rng.uniform(0.4, 0.95)) for g in names}
    fpr = {g: 0.2 if equal else float(rng.uniform(0.05, 0.4)) for g in names}
    groups, y, decision = draw(rng, sizes, p_pos, tpr, fpr)
    other = rng.choice(["u", "v"], len(y))
    model, data = write_inputs(tmp_path, y, decision, {"g": groups, "h": other})
    out = GroupFairness(intersectional=True).run(context(model, data, seed=seed))
    assert_inside(out)
    measured = [m for m in METRICS if out.metrics[m].value is not None]
    assert len(measured) >= 3
    if equal:  # (nearly) equal rates in `g`: the percentile interval of a gap lies above the point, extended to it
        alone = GroupFairness(attribute="g").run(context(model, data, seed=seed))
        assert_inside(alone)
        assert alone.details.get("ci_extended_to_point")


# --- fairness mitigation: which attribute ------------------------------------------------------------


@pytest.fixture
def single_site(tmp_path):
    """`site` has one value; `sex` has two large groups and one single record; `race` has two groups."""
    rng = np.random.default_rng(11)
    n = 240
    sex = rng.choice(["female", "male"], n).astype(object)
    sex[5] = "nonbinary"
    race = rng.choice(["a", "b"], n)
    x = rng.normal(size=n)
    y = x + 0.8 * (sex == "male") > 0.3
    return write_inputs(tmp_path, y, y, {"site": np.array(["north"] * n), "sex": sex.astype(str), "race": race},
                        x=x)


def test_mitigation_never_uses_a_single_valued_attribute(single_site):
    model, data = single_site
    _, attribute, why = FairnessMitigation()._setup(data)
    assert attribute == "sex" and "first sensitive attribute" in why  # `site` comes first but has one group
    with pytest.raises(DefenseNotApplicable, match="'site' has a single group"):
        FairnessMitigation(attribute="site")._setup(data)
    with pytest.raises(DefenseNotApplicable, match="'site' has a single group"):
        FairnessMitigation(finding={"attribute": "site"})._setup(data)
    with pytest.raises(DefenseNotApplicable, match="fewer than two groups of at least 200"):
        FairnessMitigation(attribute="sex", min_group_size=200)._setup(data)
    # an intersection with a single-valued component is the other component's groups
    _, attribute, _ = FairnessMitigation(finding={"attribute": "site × race"})._setup(data)
    assert attribute == "site × race"


def test_mitigation_aims_at_the_worst_attribute_the_requirements_found():
    def row(i, verdict, metric, worst, value=0.5):
        return {"id": i, "risk": "discrimination", "metric": metric, "value": value, "verdict": verdict,
                "details": {"worst_attribute": {metric: worst}}}

    findings = [{"id": "acc", "risk": "evasion", "metric": "robust_accuracy", "value": 0.2, "verdict": "fail",
                 "details": {}},
                row("parity", "pass", "demographic_parity_difference", "race", 0.05),
                row("impact", "fail", "impact_ratio", "sex", 0.7),
                row("odds", "fail", "equalized_odds_difference", "race")]
    aimed = FairnessMitigation.baseline_params(findings)["finding"]
    assert aimed["attribute"] == "sex" and aimed["requirement"] == "impact"  # the first failing one
    assert FairnessMitigation.baseline_params(findings[:2])["finding"]["attribute"] == "race"
    assert FairnessMitigation.baseline_params(findings[:1]) == {}
    na = dict(row("impact", "not_applicable", "impact_ratio", "sex"), value=None)
    assert FairnessMitigation.baseline_params([na]) == {}


def test_audit_mitigates_for_the_attribute_the_baseline_found_worst(single_site, tmp_path):
    """End to end: the runner evaluates the audited model first and the mitigation reads its finding (`sex`, not
    the first-listed single-valued `site`); the results say which attribute and why."""
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit

    model, data = single_site
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "policy": "mitigation-aim", "title": "Four-fifths rule",
        "requirements": [{"id": "impact", "risk": "discrimination", "metric": "impact_ratio",
                          "threshold": {"min": 0.8}}],
        "interactions": {"defenses": [{"name": "fairness_mitigation", "params": {"max_iter": 2}}]}}))
    result = run_audit(model, data, load_policy(str(policy)), seed=0, profile=PROFILES["quick"])
    (defense,) = result.defenses
    assert not defense.not_applicable, defense.not_applicable
    assert defense.details["attribute"] == "sex"
    assert "'impact' found worst" in defense.details["attribute_basis"]
    assert defense.params["finding"]["attribute"] == "sex"


def test_mitigation_takes_the_measurements_minimum_group_size_from_the_policy(tmp_path):
    from amulet_audit.plan import build_plan
    from amulet_audit.policy import load_policy

    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({
        "policy": "min-size", "title": "Four-fifths rule",
        "requirements": [{"id": "impact", "risk": "discrimination", "metric": "impact_ratio",
                          "attack": {"name": "group_fairness", "params": {"min_group_size": 50}},
                          "threshold": {"min": 0.8}}],
        "interactions": {"defenses": ["fairness_mitigation"]}}))
    (job,) = build_plan(load_policy(str(policy)).policy).defenses
    assert job.params["min_group_size"] == 50
