"""Training fidelity: a copy trained with the data spec's recipe is compared with the audited model, and requirements
that rely on trained copies are warned about (and never PASS) when the copy does not reproduce the model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import make_tabular

POLICY = {
    "policy": "copy-fidelity", "title": "Membership with and without reference models",
    "requirements": [
        {"id": "lira-privacy", "risk": "membership_inference", "attack": {"name": "lira", "params": {"n_reference": 4}},
         "metric": "auc", "threshold": {"max": 0.9}},
        {"id": "loss-privacy", "risk": "membership_inference", "attack": {"name": "loss"}, "metric": "auc",
         "threshold": {"max": 0.9}},
    ],
}


def _audit(tmp_path, *, recipe: dict | None = None, seed: int = 1):
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit

    path = make_tabular(tmp_path / "m", n=1000, epochs=30)
    spec_path = path.with_name("model.data.yaml")
    if recipe:
        spec = yaml.safe_load(spec_path.read_text())
        spec["training"].update(recipe)
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(POLICY))
    return run_audit(load_model(path), load_data(spec_path), load_policy(str(policy)), seed=seed,
                     profile=PROFILES["quick"])


def test_faithful_recipe_small_gap_high_agreement_no_warnings(tmp_path):
    result = _audit(tmp_path)  # audit seed 1: the copy starts from another initialisation than the model (seed 0)
    cf = result.copy_fidelity
    assert cf is not None and cf.faithful is True and not cf.warning and not cf.not_measured
    assert abs(cf.accuracy_gap) <= 0.03 and cf.agreement >= 0.9 and cf.n == 500
    assert cf.min_agreement == pytest.approx(min(0.9, cf.audited_accuracy))
    low, high = cf.accuracy_gap_ci
    assert low <= cf.accuracy_gap <= high
    assert cf.agreement_ci[0] <= cf.agreement <= cf.agreement_ci[1]
    assert all(not r.warnings for r in result.requirements)


def test_recipe_that_cannot_reproduce_the_model_warns_and_never_passes(tmp_path):
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.results.io import read_results, write_results

    result = _audit(tmp_path, recipe={"epochs": 1, "lr": 1e-5})  # the model itself was trained 30 epochs at 3e-3
    cf = result.copy_fidelity
    assert cf.faithful is False and abs(cf.accuracy_gap) > 0.03
    assert "under-state the risk" in cf.warning
    rows = {r.id: r for r in result.requirements}
    lira, loss = rows["lira-privacy"], rows["loss-privacy"]
    assert cf.warning in lira.warnings
    assert lira.value is not None and lira.value <= 0.9  # the weak references see (almost) nothing ...
    assert lira.verdict is not Verdict.PASS  # ... which must not pass
    assert lira.verdict is Verdict.INDETERMINATE and lira.reason == cf.warning
    assert not loss.warnings  # the loss attack trains no copy
    assert result.verdict != "pass"

    from amulet_audit.report.document import build_document

    document = build_document(result)
    assert cf.warning in document.warnings  # the report says why the numbers may under-state the risk
    (copies,) = [f for f in document.cover.facts if f.label == "Trained copies"]
    assert copies.value.startswith("Do not reproduce the model")

    out = tmp_path / "results.json"
    write_results(result, out)
    back = read_results(out)
    assert back.copy_fidelity == cf
    assert json.loads(out.read_text())["copy_fidelity"]["accuracy_gap"] == pytest.approx(cf.accuracy_gap)


def test_defended_rows_carry_the_warning_and_copy_attacks_the_bound():
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.results.model import MetricInfo, RequirementResult, Run, Threshold
    from amulet_audit.run.fidelity import compare_predictions, mark

    y = np.zeros(100, dtype=np.int64)
    cf = compare_predictions(np.zeros(100, dtype=np.int64), np.r_[np.zeros(80), np.ones(20)].astype(np.int64), y)
    assert cf.faithful is False and cf.accuracy_gap == pytest.approx(-0.2) and cf.agreement == pytest.approx(0.8)
    # agreement is held to the audited model's own accuracy when that is below 90%: seeds disagree on hard records
    audited = np.r_[np.zeros(80), np.ones(20)].astype(np.int64)  # 80% accurate
    other = np.r_[np.zeros(70), np.ones(10), np.zeros(10), np.ones(10)].astype(np.int64)  # 80% accurate, 80% agree
    assert compare_predictions(audited, other, y).faithful is True
    other[:2] = 1  # 78% agree
    assert compare_predictions(audited, other, y).min_agreement == pytest.approx(0.8)
    assert compare_predictions(audited, other, y).faithful is False

    def row(rid, run, metric, op, value, worse):
        return RequirementResult(id=rid, risk="x", attack="a", metric=metric, value=value, ci=[value - 0.01, value + 0.01],
                                 n=100, threshold=Threshold(op=op, value=0.5), verdict=Verdict.PASS, run=run,
                                 metric_info=MetricInfo(higher_is_worse=worse))

    runs = [Run(id="d/r1", attack="pgd"), Run(id="d/r2", attack="backdoor"), Run(id="d/r3", attack="extraction")]
    rows = [row("robust", "d/r1", "robust_accuracy", ">=", 0.8, False),
            row("backdoor", "d/r2", "attack_success_rate", "<=", 0.1, True),
            row("steal", "d/r3", "fidelity", "<=", 0.3, True)]
    model = SimpleNamespace(output="logits", format="torchscript")
    mark(cf, rows, runs, model, defended=True)
    assert all(cf.warning in r.warnings for r in rows)
    assert [r.verdict for r in rows] == [Verdict.PASS, Verdict.INDETERMINATE, Verdict.INDETERMINATE]

    labels_only = SimpleNamespace(output="labels", format="torchscript")
    fresh = [row("steal", "r3", "fidelity", "<=", 0.3, True)]
    mark(cf, fresh, [Run(id="r3", attack="extraction")], labels_only)  # its surrogate is the adversary's own MLP
    assert fresh[0].verdict is Verdict.PASS and not fresh[0].warnings


def test_label_only_model_is_not_copied_and_says_why():
    from amulet_audit.run.fidelity import copy_fidelity

    model = SimpleNamespace(output="labels", format="torchscript")
    cf = copy_fidelity(model, SimpleNamespace(), seed=0)
    assert cf.faithful is None and cf.accuracy_gap is None
    assert "trainable copies" in cf.not_measured and "labels only" in cf.not_measured


def test_results_without_copy_fidelity_still_read(tmp_path):
    from amulet_audit.results.io import read_results

    # a 2.0 file written before copy_fidelity was recorded
    raw = {"schema_version": "2.0", "tool": {"version": "0"}, "verdict": "pass",
           "model": {"path": "m.pt", "sha256": "x", "format": "torchscript", "parameters": 1},
           "data": {"path": "d.yaml", "sha256": "y", "n_train": 1, "n_holdout": 1},
           "policy": {"id": "p", "sha256": "z", "title": "t"}, "requirements": [], "seed": 0,
           "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00"}
    (tmp_path / "r2.json").write_text(json.dumps(raw))
    assert read_results(tmp_path / "r2.json").copy_fidelity is None
    (tmp_path / "r1.json").write_text(json.dumps({**raw, "schema_version": "1.1"}))
    old = read_results(tmp_path / "r1.json")
    assert old.converted_from == "1.1" and old.copy_fidelity is None
