"""The built-in attacks and measurements on real (small) models: contract, and behaviour that matters."""

from __future__ import annotations

import numpy as np
import pytest

from amulet_audit.core import registry
from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.risks.discrimination import GroupFairness, _summaries
from amulet_audit.risks.evasion import PGD
from amulet_audit.risks.membership import LossAttack

from conftest import context, make_tabular


def test_registry_records_the_providing_distribution():
    assert all(r.provider.startswith("amulet-audit") or r.provider.startswith("amulet_audit") for r in registry.attacks().values())


def test_robust_accuracy_is_at_most_clean_and_falls_with_epsilon(tabular_inputs):
    model, data = tabular_inputs
    out = PGD(eps=0.3, steps=10).run(context(model, data))
    curve = [p["robust_accuracy"] for p in out.details["curve"]]
    assert out.metrics["robust_accuracy"].value <= out.metrics["clean_accuracy"].value
    assert curve[0] == pytest.approx(out.metrics["clean_accuracy"].value)
    assert all(b <= a + 1e-9 for a, b in zip(curve, curve[1:]))
    assert curve[-1] < curve[0] - 0.2  # eps 0.6 on standardised features defeats an undefended MLP
    assert out.details["warnings"] == []


def test_l2_pgd_is_weaker_than_linf_at_the_same_epsilon_in_six_dimensions(tabular_inputs):
    model, data = tabular_inputs
    linf = PGD(eps=0.3, steps=10).run(context(model, data)).metrics["robust_accuracy"].value
    l2 = PGD(eps=0.3, steps=10, norm="l2").run(context(model, data)).metrics["robust_accuracy"].value
    assert l2 >= linf  # the L2 ball of radius eps lies inside the L-inf ball


def test_pgd_respects_the_input_range(tmp_path):
    import torch

    from amulet_audit.risks.evasion import pgd_attack

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    x = np.full((8, 1, 2, 2), 0.95, dtype=np.float32)
    y = np.zeros(8, dtype=np.int64)
    seen = []
    original = net.forward

    def spy(inp):
        seen.append(inp.detach().clone())
        return original(inp)

    net.forward = spy
    pgd_attack(net, x, y, eps=0.5, norm="linf", steps=3, step_size=0.3, restarts=1, random_start=True, bounds=(0.0, 1.0), seed=0)
    stacked = torch.cat([s.flatten() for s in seen])
    assert stacked.max() <= 1.0 and stacked.min() >= 0.45 - 1e-6


def test_overfit_model_leaks_membership_more_than_a_regularised_one(tmp_path):
    overfit = make_tabular(tmp_path / "overfit", n=1200, n_members=200, epochs=200, hidden=256, seed=1, noise=2.0)
    regular = make_tabular(tmp_path / "regular", n=1200, n_members=200, epochs=5, hidden=16, weight_decay=1e-3, seed=1, noise=2.0)
    aucs = {}
    for name, path in (("overfit", overfit), ("regular", regular)):
        ctx = context(load_model(path), load_data(path.with_name("model.data.yaml")))
        aucs[name] = LossAttack().run(ctx).metrics["auc"]
    assert aucs["overfit"].value > aucs["regular"].value + 0.1
    assert aucs["overfit"].ci[0] > 0.5  # confidently above chance
    assert aucs["regular"].ci[0] <= 0.5 + 0.05


def test_tpr_at_low_fpr_needs_enough_non_members(tabular_inputs):
    model, data = tabular_inputs
    out = LossAttack().run(context(model, data))  # 1,500 non-members
    assert out.metrics["tpr_at_fpr_0.001"].reason == ""
    small = LossAttack(samples=400).run(context(model, data))
    assert "1,000 non-members" in small.metrics["tpr_at_fpr_0.001"].reason
    assert small.metrics["tpr_at_fpr_0.01"].reason == ""


def test_model_biased_by_construction_has_low_impact_ratio_and_fast_path_matches_metricframe(tabular_inputs):
    model, data = tabular_inputs
    out = GroupFairness().run(context(model, data))
    ir = out.metrics["impact_ratio"]
    assert ir.value < 0.8 and ir.ci[1] < 0.8  # confidently below the four-fifths benchmark
    groups = {g["group"]: g for g in out.details["by_attribute"]["sex"]["groups"]}
    assert groups["F"]["selection_rate"] < groups["M"]["selection_rate"]
    # the bootstrap's numpy path computes the same summaries as Fairlearn's MetricFrame
    from amulet_audit.ops.forward import predict

    yp = predict(model.module, data.x_holdout) == 1
    codes = np.unique(data.sensitive_holdout["sex"], return_inverse=True)[1]
    fast = _summaries(codes, 2, data.y_holdout == 1, yp)
    for m in fast:
        assert fast[m] == pytest.approx(out.metrics[m].value, abs=1e-12)


def test_unbiased_model_passes_impact_ratio(tmp_path):
    path = make_tabular(tmp_path / "fair", bias=0.0, seed=2)
    out = GroupFairness().run(context(load_model(path), load_data(path.with_name("model.data.yaml"))))
    assert out.metrics["impact_ratio"].value > 0.85


def test_fairness_not_applicable_without_sensitive_attribute(tabular_inputs):
    import dataclasses

    model, data = tabular_inputs
    bare = dataclasses.replace(data, sensitive_holdout={}, sensitive_train={})
    out = GroupFairness().run(context(model, bare))
    assert out.not_applicable and "sensitive" in out.not_applicable


def test_loss_of_a_confident_prediction_stays_above_zero_and_keeps_its_order():
    """The LOSS attack scores records by their loss: records the model is very sure of must stay ordered by how
    sure (margins 20 and 40 in float32 logits), not tie at a loss of exactly 0."""
    import torch

    from amulet_audit.ops.forward import cross_entropy

    z = np.array([[20.0, 0.0], [40.0, 0.0], [0.0, 3.0], [1.0, 2.0]], dtype=np.float32)
    y = np.array([0, 0, 0, 1])
    loss = cross_entropy(z, y)
    reference = torch.nn.functional.cross_entropy(torch.tensor(z, dtype=torch.float64), torch.tensor(y),
                                                  reduction="none").numpy()
    assert np.allclose(loss[2:], reference[2:], rtol=1e-12)  # ordinary losses as torch computes them
    assert 0 < loss[1] < loss[0] and np.isclose(loss[0], np.exp(-20.0), rtol=1e-9)  # log1p(exp(-20))
    assert np.isclose(loss[1], np.exp(-40.0), rtol=1e-9)
