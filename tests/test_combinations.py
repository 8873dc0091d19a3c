"""Combined defenses: several training procedures in one copy (policy `interactions.combinations`)."""

from __future__ import annotations

import dataclasses
import subprocess

import numpy as np
import pytest

from conftest import AMULET
from amulet_audit.core.attack import PROFILES
from amulet_audit.core.defense import Combination, DefenseContext, DefenseNotApplicable
from amulet_audit.core.digest import weights_digest
from amulet_audit.defenses.adversarial_training import AdversarialTraining
from amulet_audit.defenses.dp_sgd import DPSGD
from amulet_audit.defenses.fairness import FairnessMitigation
from amulet_audit.defenses.outlier_removal import OutlierRemoval


def _ctx(tabular_inputs, n: int = 600) -> DefenseContext:
    """A defense context on the first `n` training records, with a short recipe (fast, same procedures)."""
    model, data = tabular_inputs
    spec = data.spec.model_copy(update={"training": data.spec.training.model_copy(update={"epochs": 2})})
    small = dataclasses.replace(data, x_train=data.x_train[:n], y_train=data.y_train[:n], spec=spec,
                                sensitive_train={k: v[:n] for k, v in data.sensitive_train.items()})
    return DefenseContext(model=model, data=small, seed=0, profile=PROFILES["quick"])


def test_dp_sgd_with_adversarial_training_crafts_adversarial_batches_inside_dp_training(tabular_inputs, monkeypatch):
    import amulet_audit.defenses.adversarial_training as at

    ctx = _ctx(tabular_inputs)
    crafted = []
    real = at.pgd_examples

    def spy(scores, xb, yb, **kw):
        adv = real(scores, xb, yb, **kw)
        crafted.append(float((adv - xb).abs().max()))
        return adv

    monkeypatch.setattr(at, "pgd_examples", spy)
    dp = DPSGD(epsilon=3.0, epochs=1)
    combined = Combination([dp, AdversarialTraining(eps=0.2, steps=2)]).apply(ctx)
    steps = combined.details["dp_sgd"]["steps"]
    # one adversarial batch per Poisson-sampled DP step (an empty batch is perturbed too), within the budget
    assert len(crafted) == steps and 0 < max(crafted) <= 0.2 + 1e-6
    assert combined.details["combination"] == ["adversarial_training", "dp_sgd"]  # outermost first
    assert combined.details["adversarial_training"]["epochs"] == "those of the procedure inside it"

    alone = DPSGD(epsilon=3.0, epochs=1).apply(ctx)
    # the same privacy accounting (adversarial inputs do not change a record's clipped contribution) ...
    assert combined.details["dp_sgd"]["spent_epsilon"] == pytest.approx(alone.details["spent_epsilon"])
    # ... but other weights: the gradients were taken on adversarial examples
    assert weights_digest(combined.model.module) != weights_digest(alone.model.module)
    # deterministic for a seed
    again = Combination([DPSGD(epsilon=3.0, epochs=1), AdversarialTraining(eps=0.2, steps=2)]).apply(ctx)
    assert weights_digest(again.model.module) == weights_digest(combined.model.module)


def test_outlier_removal_hands_its_kept_records_to_the_procedure_inside(tabular_inputs, monkeypatch):
    import amulet_audit.defenses.dp_sgd as dps

    ctx = _ctx(tabular_inputs)
    seen = []
    real = DPSGD.fit_with

    def spy(self, c, x, y, recipe, seed, **kw):
        seen.append((len(x), {k: len(v) for k, v in (c.sensitive or {}).items()}))
        return real(self, c, x, y, recipe, seed, **kw)

    monkeypatch.setattr(dps.DPSGD, "fit_with", spy)
    out = Combination([DPSGD(epsilon=3.0, epochs=1), OutlierRemoval(fraction=0.1)]).apply(ctx)
    kept = 600 - 60
    assert seen == [(kept, {a: kept for a in ctx.data.sensitive_train})]
    assert out.details["outlier_removal"]["removed"] == 60
    # the privacy evidence is of what ran: 540 records, their sampling rate; the selection is outside the guarantee
    dp = out.details["dp_sgd"]
    assert "trained on 540 of the 600 training records" in dp["records"] and "not covered" in dp["records"]
    assert dp["sample_rate"] == pytest.approx(min(1.0, 256 / 540))


def test_a_procedure_that_cannot_take_what_the_outer_one_hands_down_is_not_applicable(tabular_inputs):
    ctx = _ctx(tabular_inputs)
    with pytest.raises(DefenseNotApplicable, match="DP-SGD cannot train on weighted records"):
        Combination([FairnessMitigation(max_iter=2), DPSGD(epsilon=3.0, epochs=1)]).apply(ctx)
    with pytest.raises(DefenseNotApplicable, match="both act on the data of training"):
        Combination([OutlierRemoval(), OutlierRemoval(fraction=0.1)]).apply(ctx)


@pytest.mark.parametrize("combination, message", [
    ("[[outlier_removal, watermarking]]", "outlier_removal and watermarking both act on the data of training"),
    ("[[dp_sgd]]", "a combination needs at least two"),
    ("[[dp_sgd, adversarial_trainin]]", "unknown defense 'adversarial_trainin'; did you mean 'adversarial_training'?"),
    ("[[dp_sgd, {name: adversarial_training, params: {eps: -1}}]]", "eps"),
])
def test_a_policy_with_a_combination_that_cannot_be_trained_is_refused(tmp_path, combination, message):
    policy = tmp_path / "policy.yaml"
    policy.write_text(f"""\
policy: combo
title: combination
interactions:
  defenses: [dp_sgd]
  combinations: {combination}
requirements:
  - id: membership
    risk: membership_inference
    metric: auc
    threshold: {{max: 0.6}}
""")
    done = subprocess.run([*AMULET, "validate", str(policy)], capture_output=True, text=True)
    assert done.returncode == 2, done.stdout + done.stderr
    err = done.stderr.strip()
    assert message in err and "combination" in err and "Traceback" not in err


def test_each_part_is_also_applied_alone_and_the_combination_is_named_by_its_parts():
    from amulet_audit.plan import build_plan
    from amulet_audit.policy.schema import Policy

    policy = Policy.model_validate({
        "policy": "p", "title": "t",
        "requirements": [{"id": "r", "risk": "evasion", "metric": "robust_accuracy", "threshold": {"min": 0.5},
                          "attack": {"name": "pgd", "params": {"eps": 0.05}}}],
        "interactions": {"defenses": ["dp_sgd"], "combinations": [["dp_sgd", "adversarial_training"]]},
    })
    plan = build_plan(policy)
    assert [d.name for d in plan.defenses] == ["dp_sgd", "adversarial_training", "dp_sgd+adversarial_training"]
    combo = plan.defenses[-1]
    assert [p.name for p in combo.parts] == ["dp_sgd", "adversarial_training"]
    # parts take the policy's parameters as they do alone (adversarial training at the evasion budget)
    assert combo.parts[1] == plan.defenses[1] and combo.parts[1].params["eps"] == 0.05
    assert np.isclose(plan.defenses[1].params["eps"], 0.05)


def test_a_defense_named_bare_in_a_combination_is_the_one_the_policy_lists():
    from amulet_audit.plan import build_plan
    from amulet_audit.policy.schema import Policy

    policy = Policy.model_validate({
        "policy": "p", "title": "t",
        "requirements": [{"id": "r", "risk": "membership_inference", "metric": "auc", "threshold": {"max": 0.6}}],
        "interactions": {"defenses": [{"name": "dp_sgd", "params": {"epsilon": 0.5}}, "outlier_removal"],
                         "combinations": [["dp_sgd", "outlier_removal"],
                                          [{"name": "dp_sgd", "params": {"epsilon": 8}}, "outlier_removal"]]},
    })
    plan = build_plan(policy)
    names = [(d.name, d.params) for d in plan.defenses]
    # the bare dp_sgd is the listed one at epsilon 0.5 (not a second dp_sgd at the default); one with its own
    # parameters is another defense, applied alone too
    assert names[:3] == [("dp_sgd", {"epsilon": 0.5}), ("outlier_removal", {}), ("dp_sgd", {"epsilon": 8})]
    assert plan.defenses[3].parts[0].params == {"epsilon": 0.5} and plan.defenses[4].parts[0].params == {"epsilon": 8}


def test_a_defended_model_that_predicts_one_class_is_said_to_be_constant(tabular_inputs):
    import torch

    from amulet_audit.run.jobs import _constant

    model, data = tabular_inputs
    assert _constant(model, data) == []

    class Constant(torch.nn.Module):
        def forward(self, x):
            return torch.tensor([[2.0, -2.0]]).repeat(len(x), 1)

    warning = _constant(dataclasses.replace(model, module=Constant()), data)
    share = float(np.mean(data.y_holdout == 0))
    assert len(warning) == 1 and f"predicts '{data.classes[0]}' for every holdout record" in warning[0]
    assert f"{share:.3f}" in warning[0] and "constant model" in warning[0]
