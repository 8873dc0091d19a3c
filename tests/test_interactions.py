"""Defenses and the interaction matrix on a real model (UCI Adult MLP, deliberately overfit)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from conftest import ADULT, AMULET, ROOT

POLICY = """\
policy: interactions-test
title: Interactions on the Adult MLP
requirements:
  - id: robust
    risk: evasion
    attack: {name: pgd, params: {eps: 0.1, norm: linf, steps: 10}}
    metric: robust_accuracy
    threshold: {min: 0.5}
  - id: membership
    risk: membership_inference
    attack: {name: loss}
    metric: auc
    threshold: {max: 0.6}
  - id: parity
    risk: discrimination
    metric: demographic_parity_difference
    threshold: {max: 0.1}
interactions:
  defenses: [{name: dp_sgd, params: {epsilon: 1.0}}, adversarial_training]
  combinations: [[{name: dp_sgd, params: {epsilon: 1.0}}, adversarial_training]]
  tolerance: 0.02
"""

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not ADULT.exists(), reason="needs ../shared/data/adult/adult.data")]


@pytest.fixture(scope="module")
def adult_overfit(tmp_path_factory):
    out = tmp_path_factory.mktemp("adult-overfit")
    done = subprocess.run([sys.executable, ROOT / "examples" / "adult" / "train.py", "--out", out, "--data-file", ADULT,
                           "--n-train", "500", "--n-holdout", "2000", "--epochs", "150"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    (out / "policy.yaml").write_text(POLICY)
    return out


def audit(folder, out, *extra):
    done = subprocess.run([*AMULET, folder / "model.pt", "--policy", folder / "policy.yaml", "--out", out, "--profile", "quick",
                           "--quiet", "--cache-dir", folder / "cache", *map(str, extra)], capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return json.loads((out / "results.json").read_text())


def test_matrix_rows_directions_and_audited_model_untouched(adult_overfit, tmp_path):
    model = adult_overfit / "model.pt"
    before = hashlib.sha256(model.read_bytes()).hexdigest()
    result = audit(adult_overfit, tmp_path / "report")
    assert hashlib.sha256(model.read_bytes()).hexdigest() == before == result["model"]["sha256"]

    rows = {(r["defense"], r["requirement"]): r for r in result["interactions"]}
    combo = "dp_sgd+adversarial_training"
    assert set(rows) == {(d, q) for d in ("dp_sgd", "adversarial_training", combo)
                         for q in ("robust", "membership", "parity")}
    # DP-SGD lowers membership risk on an overfit model (intended); adversarial training raises robust accuracy
    assert rows["dp_sgd", "membership"]["delta"] < -0.03 and rows["dp_sgd", "membership"]["intended"]
    assert not rows["dp_sgd", "membership"]["worse"] and not rows["dp_sgd", "membership"]["flagged"]
    assert rows["adversarial_training", "robust"]["delta"] > 0.03 and rows["adversarial_training", "robust"]["intended"]

    # deltas agree with the per-model results, and flags follow the rule
    baseline = {r["id"]: r for r in result["requirements"]}
    runs = {r["id"]: r for r in result["runs"]}
    for d in result["defenses"]:
        assert d["model_sha256"] != before and d["clean_accuracy_after"] is not None
        for r in d["requirements"]:
            row = rows[d["name"], r["id"]]
            # the defended value points to its own run, on the defended model, with the baseline run's configuration
            run, base_run = runs[r["run"]], runs[baseline[r["id"]]["run"]]
            assert run["defense"] == d["name"] and base_run["defense"] is None
            assert (run["attack"], run["params"]) == (base_run["attack"], base_run["params"])
            assert row["baseline"] == baseline[r["id"]]["value"] and row["defended"] == r["value"]
            assert row["delta"] == pytest.approx(r["value"] - baseline[r["id"]]["value"])
            lo, hi = row["delta_ci"]
            assert lo <= row["delta"] <= hi
            # paired record by record; a fairness gap only when both models' worst attribute is the same one
            worst = ([runs[x["run"]]["details"]["worst_attribute"][x["metric"]] for x in (baseline[r["id"]], r)]
                     if r["id"] == "parity" else [])
            paired = not worst or worst[0] == worst[1]
            assert row["delta_ci_method"] == ("paired bootstrap" if paired else "normal approximation")
            # flagged: unintended, worse beyond the tolerance, interval excluding zero, surviving BH at the rate
            beyond = row["worse"] and not row["intended"] and abs(row["delta"]) > row["tolerance"]
            excludes = lo > 0 if row["delta"] > 0 else hi < 0
            assert row["fdr"] == 0.05  # the default rate
            survives = row["p_adjusted"] is not None and row["p_adjusted"] <= row["fdr"]
            assert row["flagged"] == (beyond and excludes and survives)
            assert row["possible"] == (beyond and not row["flagged"])
            assert 0 <= row["p_value"] <= 1 and (row["p_adjusted"] is None) == row["intended"]
    assert result["defenses"][0]["details"]["spent_epsilon"] <= 1.0 + 1e-6

    # the combination: trained with both procedures, measured like a defense (a heatmap column), and compared with
    # each defense alone on the risks that one is meant for
    defended = {d["name"]: {r["id"]: r for r in d["requirements"]} for d in result["defenses"]}
    together = next(d for d in result["defenses"] if d["name"] == combo)
    assert together["parts"] == ["dp_sgd", "adversarial_training"] and together["intended"] == [
        "membership_inference", "attribute_inference", "data_reconstruction", "evasion"]
    assert together["details"]["dp_sgd"]["spent_epsilon"] == pytest.approx(result["defenses"][0]["details"]["spent_epsilon"])
    assert len({d["model_sha256"] for d in result["defenses"]}) == 3
    versus = {(r["versus"], r["requirement"]): r for r in result["combined"]}
    assert set(versus) == {("dp_sgd", "membership"), ("adversarial_training", "robust")}
    for (part, req), row in versus.items():
        assert row["defense"] == combo and not row["intended"]
        assert row["baseline"] == defended[part][req]["value"] and row["defended"] == defended[combo][req]["value"]
        lo, hi = row["delta_ci"]
        assert row["delta_ci_method"] == "paired bootstrap" and lo <= row["delta"] <= hi
        beyond = row["worse"] and abs(row["delta"]) > row["tolerance"]
        survives = row["p_adjusted"] is not None and row["p_adjusted"] <= row["fdr"]
        assert row["flagged"] == (beyond and (lo > 0 if row["delta"] > 0 else hi < 0) and survives)

    html = (tmp_path / "report" / "report.html").read_text()
    assert "dp_sgd" in html and "adversarial_training" in html
    assert "Combined defenses" in html and "DP-SGD (ε = 1) + Adversarial training" in html


def test_parallel_units_give_the_same_matrix(adult_overfit, tmp_path):
    one = audit(adult_overfit, tmp_path / "one", "--no-pdf")
    two = audit(adult_overfit, tmp_path / "two", "--no-pdf", "--jobs", "2")
    assert [(r["defense"], r["requirement"], r["defended"], r["delta_ci"]) for r in one["interactions"]] == \
           [(r["defense"], r["requirement"], r["defended"], r["delta_ci"]) for r in two["interactions"]]
    assert [(r["versus"], r["requirement"], r["defended"], r["delta_ci"]) for r in one["combined"]] == \
           [(r["versus"], r["requirement"], r["defended"], r["delta_ci"]) for r in two["combined"]]
    assert two["environment"]["jobs"] == 2


def test_unknown_defense_is_refused_listing_the_known_ones(adult_overfit, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(POLICY.replace("adversarial_training]", "adverserial_training]"))
    done = subprocess.run([*AMULET, "validate", bad], capture_output=True, text=True)
    assert done.returncode == 2
    assert "unknown defense 'adverserial_training'" in done.stderr and "adversarial_training, dp_sgd" in done.stderr
