"""Security risks of Art. 15(5) on a real model (an MLP on a UCI Adult subsample): evasion (fgsm, pgd, apgd),
poisoning (label_flip, backdoor) and model extraction, plus their report evidence."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import pytest

from amulet_audit.inputs.data import TrainingRecipe, load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.risks.evasion import APGD, FGSM, PGD, apgd_attack, apgd_checkpoints, pgd_attack
from amulet_audit.risks.extraction import Extraction
from amulet_audit.risks.poisoning import Backdoor, LabelFlip

from conftest import ADULT, ROOT, context

RECIPE = TrainingRecipe(epochs=10, batch_size=128, optimizer="adam", lr=0.002)
EPS = 0.1


def _adult_module():
    key = "_amulet_test_adult_train"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "examples" / "adult" / "train.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    """(ModelHandle, AuditData) for a scripted MLP trained on 2,000 Adult records (2,000 holdout)."""
    if not ADULT.is_file():
        pytest.skip(f"UCI Adult not found at {ADULT}")
    ex = _adult_module()
    out = tmp_path_factory.mktemp("adult")
    ex.prepare(ex.load_adult(ADULT, download=False), seed=0, n_train=2000, n_holdout=2000).to_parquet(out / ex.DATA_FILE)
    spec = ex.write_spec(out, ex.spec_dict(RECIPE), "test subsample")
    data = load_data(spec)
    ex.save_scripted(ex.fit(data, RECIPE, seed=0, hidden=(32,)), out / ex.MODEL_FILE)
    return load_model(out / ex.MODEL_FILE), data


# --- evasion -------------------------------------------------------------------------------------


def test_apgd_checkpoints_follow_croce_and_hein():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


@pytest.mark.parametrize("cls", [FGSM, PGD, APGD], ids=lambda c: c.name)
def test_robust_accuracy_is_at_most_clean_and_falls_with_epsilon(cls, adult):
    model, data = adult
    params = {"eps": EPS} if cls is FGSM else {"eps": EPS, "steps": 20}
    out = cls(**params).run(context(model, data))
    m, curve = out.metrics, out.details["curve"]
    acc = [p["robust_accuracy"] for p in curve]
    assert m["robust_accuracy"].value <= m["clean_accuracy"].value
    assert acc[0] == pytest.approx(m["clean_accuracy"].value)
    assert all(b <= a + 0.01 for a, b in zip(acc, acc[1:])), acc
    assert acc[-2] < acc[0] - 0.1  # twice the policy's eps harms an undefended MLP
    assert curve[-1].get("check") == "large_eps" and curve[-1]["eps"] > 2 * EPS
    main = next(p for p in curve if p["eps"] == pytest.approx(EPS))
    assert main["robust_accuracy"] == pytest.approx(m["robust_accuracy"].value)
    assert m["attack_success_rate"].value == pytest.approx(1 - m["robust_accuracy"].value / m["clean_accuracy"].value)
    if cls is not FGSM:  # iterative attacks reach (near) zero at a budget that covers the data: no gradient masking
        assert acc[-1] <= 0.05 and out.details["warnings"] == []


def test_apgd_is_at_least_as_strong_as_pgd_on_the_same_budget(adult):
    model, data = adult
    x, y = data.x_holdout[:1000], data.y_holdout[:1000]
    for eps in (0.05, 0.1):
        pgd = pgd_attack(model.module, x, y, eps=eps, norm="linf", steps=20, step_size=2.5 * eps / 20, restarts=1,
                         random_start=True, bounds=None, seed=0).mean()
        apgd = apgd_attack(model.module, x, y, eps=eps, norm="linf", steps=20, restarts=1, bounds=None, seed=0).mean()
        assert apgd <= pgd + 0.005, (eps, apgd, pgd)  # APGD alone, without the PGD run the attack adds
    full_pgd = PGD(eps=EPS, steps=20, samples=300).run(context(model, data)).metrics["robust_accuracy"].value
    full_apgd = APGD(eps=EPS, steps=20, samples=300).run(context(model, data))
    assert full_apgd.metrics["robust_accuracy"].value <= full_pgd + 0.005
    assert "PGD run" in full_apgd.details["combined"]


def test_l2_apgd_respects_the_input_range():
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    seen = []
    original = net.forward
    net.forward = lambda inp: (seen.append(inp.detach().clone()), original(inp))[1]
    x = np.full((8, 1, 2, 2), 0.9, dtype=np.float32)
    apgd_attack(net, x, np.zeros(8, dtype=np.int64), eps=0.5, norm="l2", steps=10, restarts=1, bounds=(0.0, 1.0), seed=0)
    for s in seen:
        assert s.min() >= 0.0 and s.max() <= 1.0
        assert (s - 0.9).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5


def _adversarially_trained(data, eps: float, *, epochs: int, seed: int = 0):
    """PGD adversarial training (Madry et al. 2018): each mini-batch replaced by its PGD-7 adversarial examples."""
    import torch
    import torch.nn.functional as F

    ex = _adult_module()
    torch.manual_seed(seed)
    net = ex.build_model(data.n_features, (32,), data.n_classes)
    opt = torch.optim.Adam(net.parameters(), lr=RECIPE.lr)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), RECIPE.batch_size):
            xb, yb = x[order[start:start + RECIPE.batch_size]], y[order[start:start + RECIPE.batch_size]]
            net.eval()
            adv = xb + (torch.rand(xb.shape, generator=gen) * 2 - 1) * eps
            for _ in range(7):
                adv.requires_grad_(True)
                (g,) = torch.autograd.grad(F.cross_entropy(net(adv), yb), adv)
                adv = (xb + (adv.detach() + 2.5 * eps / 7 * g.sign() - xb).clamp(-eps, eps)).detach()
            net.train()
            opt.zero_grad()
            F.cross_entropy(net(adv), yb).backward()
            opt.step()
    return net.eval()


def test_adversarial_training_raises_robust_accuracy(adult, tmp_path):
    model, data = adult
    ex = _adult_module()
    eps = 0.2
    ex.save_scripted(_adversarially_trained(data, eps, epochs=RECIPE.epochs), tmp_path / "adv.pt")
    robust = load_model(tmp_path / "adv.pt")
    standard = PGD(eps=eps, steps=20).run(context(model, data)).metrics["robust_accuracy"]
    defended = PGD(eps=eps, steps=20).run(context(robust, data)).metrics["robust_accuracy"]
    assert defended.ci[0] > standard.ci[1], (defended, standard)  # confidently more robust


# --- poisoning -----------------------------------------------------------------------------------


def test_ten_percent_backdoor_succeeds_while_clean_accuracy_barely_moves(adult):
    model, data = adult
    out = Backdoor(fraction=0.1).run(context(model, data))
    asr, drop = out.metrics["attack_success_rate"], out.metrics["accuracy_drop"]
    assert out.details["target_class"] == ">50K" and out.details["n_poisoned"] == 200
    assert asr.value > 0.9 and asr.ci[0] > 0.8, out.details
    assert out.details["success_rate_on_clean_model"] < 0.5  # the trigger alone does not do it
    assert abs(drop.value) < 0.03 and drop.ci[0] <= 0 + 0.03, out.details
    assert drop.value == pytest.approx(out.details["clean_model_accuracy"] - out.details["poisoned_model_accuracy"])


def test_label_flips_cost_accuracy_and_a_clean_copy_is_the_reference(adult):
    from amulet_audit.training.cache import ModelCache

    model, data = adult
    ctx = context(model, data)
    ctx.cache = ModelCache(None)
    heavy = LabelFlip(fraction=0.45, epochs=5).run(ctx)
    light = LabelFlip(fraction=0.05, epochs=5).run(ctx)
    assert heavy.details["clean_model_accuracy"] == light.details["clean_model_accuracy"]  # same clean copy
    assert heavy.metrics["accuracy_drop"].value > light.metrics["accuracy_drop"].value + 0.03
    assert heavy.metrics["accuracy_drop"].ci[0] > 0
    assert heavy.metrics["attack_success_rate"].value > light.metrics["attack_success_rate"].value


# --- model extraction ----------------------------------------------------------------------------


def test_extraction_fidelity_rises_with_queries_and_probabilities_help(adult):
    model, data = adult
    probs = Extraction(access="probabilities", queries=160).run(context(model, data))
    labels = Extraction(access="labels", queries=160).run(context(model, data))
    for out in (probs, labels):
        curve = out.details["curve"]
        assert [p["queries"] for p in curve] == [20, 40, 80, 160]
        assert curve[-1]["fidelity"] > curve[0]["fidelity"] + 0.02, curve
        assert out.metrics["fidelity"].value == curve[-1]["fidelity"] and out.metrics["fidelity"].n == 1000
        # surrogate accuracy is bounded by how well the target itself does, up to sampling noise
        assert out.metrics["surrogate_accuracy"].value <= out.details["target_accuracy"] + 0.03
    assert probs.metrics["fidelity"].value > 0.95
    for p, q in zip(probs.details["curve"], labels.details["curve"]):
        assert p["fidelity"] >= q["fidelity"] - 0.01  # soft labels carry more information per query


def test_synthetic_extraction_queries_stay_in_the_input_range(adult):
    from amulet_audit.risks.extraction import synthetic_queries

    _, data = adult
    rng = np.random.default_rng(0)
    x, how = synthetic_queries(data.x_holdout, 500, (0.0, 1.0), rng)
    assert x.min() >= 0 and x.max() <= 1 and "uniform" in how
    g, how = synthetic_queries(data.x_holdout, 5000, None, rng)
    assert np.allclose(g.mean(0), data.x_holdout.mean(0), atol=0.1) and "Gaussian" in how


# --- report evidence -----------------------------------------------------------------------------


def test_security_evidence_builders_chart_the_recorded_details(adult):
    from amulet_audit.report.document import EVIDENCE
    from amulet_audit.report.nodes import Chart, Table

    model, data = adult
    details = Extraction(access="labels", queries=40).run(context(model, data)).details
    blocks = EVIDENCE["model_extraction"](_Run("extraction", {"queries": 40}, details), [_Req("extraction")])
    assert any(isinstance(b, Chart) and "<svg" in b.svg for b in blocks)
    assert any(isinstance(b, Table) and len(b.rows) == len(details["curve"]) for b in blocks)
    poison = {"clean_model_accuracy": 0.82, "poisoned_model_accuracy": 0.81, "attack_success_rate": 0.97,
              "success_rate_on_clean_model": 0.05, "fraction": 0.1, "target_class": ">50K"}
    blocks = EVIDENCE["poisoning"](_Run("backdoor", {"fraction": 0.1}, poison), [_Req("backdoor")])
    assert any(isinstance(b, Chart) for b in blocks)


def _Req(attack, metric="fidelity"):
    """A requirement result as the runner records it (only the fields the builders read matter)."""
    from amulet_audit.results.model import MetricInfo, RequirementResult, Threshold, Verdict

    return RequirementResult(id="r", risk="model_extraction", attack=attack, metric=metric, value=0.5, ci=[0.4, 0.6], n=10,
                             threshold=Threshold(op="<=", value=0.9), verdict=Verdict.PASS, run="r1",
                             metric_info=MetricInfo(higher_is_worse=True, unit="fraction"))


def _Run(attack, params, details):
    """The attack run the requirements point to: its configuration and recorded details."""
    from amulet_audit.results.model import Run

    return Run(id="r1", attack=attack, params=params, details=details)


def test_evasion_evidence_keeps_the_masking_check_off_the_chart(adult):
    from amulet_audit.report.document import EVIDENCE
    from amulet_audit.report.nodes import Chart, Table

    model, data = adult
    details = PGD(eps=EPS, steps=5, samples=100).run(context(model, data)).details
    req = _Req("pgd")
    blocks = EVIDENCE["evasion"](_Run("pgd", {"eps": EPS}, details),
                                 [req.model_copy(update={"risk": "evasion", "metric": "robust_accuracy"})])
    tables = [b for b in blocks if isinstance(b, Table)]
    assert any(isinstance(b, Chart) for b in blocks)
    assert len(tables[0].rows) == len(details["curve"]) - 1  # the ordinary budgets
    assert "Gradient-masking" in tables[-1].caption and len(tables[-1].rows) == 1


def test_image_backdoor_stamps_a_corner_patch_only():
    from amulet_audit.risks.poisoning import apply_trigger

    x = np.zeros((3, 1, 8, 8), dtype=np.float32)
    out = apply_trigger(x, {"kind": "patch", "size": 2, "value": 1.0})
    assert out[:, :, -2:, -2:].min() == 1.0 and out.sum() == 3 * 4
    assert x.sum() == 0  # the input is not modified


def test_extraction_from_probabilities_on_a_label_only_model_points_at_access_labels():
    from types import SimpleNamespace

    from amulet_audit.core.attack import PROFILES, AttackContext

    model = SimpleNamespace(output="labels", format="torchscript", module=None)
    ctx = AttackContext(model=model, data=SimpleNamespace(), seed=0, profile=PROFILES["quick"])
    refused = Extraction(access="probabilities").run(ctx)
    assert refused.not_applicable.startswith("this needs the model's per-class scores")
    assert refused.not_applicable.endswith("; `access: labels` measures extraction from the predicted labels only")
    assert Extraction(access="labels").unmet({"access": "labels"}, model, None) == ""
