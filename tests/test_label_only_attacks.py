"""Attacks that need only the model's predicted labels: HopSkipJump evasion (Chen et al., S&P 2020) and label-only
membership inference (Choquette-Choo et al., ICML 2021). They run on a label-only model, HopSkipJump is no stronger
than white-box PGD yet finds the adversarial examples that exist, and label-only membership inference tells an
overfit model from a regularised one."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from amulet_audit.core import registry
from conftest import context, make_tabular


def _run(name, model, data, **params):
    return registry.attack_class(name)(**params).run(context(model, data))


class _Linear(torch.nn.Module):
    """Two classes split by the hyperplane w.x + b = 0 (logits [0, w.x + b])."""

    def __init__(self, w, b):
        super().__init__()
        self.w = torch.nn.Parameter(torch.as_tensor(w, dtype=torch.float32))
        self.b = torch.nn.Parameter(torch.tensor(float(b)))

    def forward(self, x):
        z = x @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], dim=1)


class _Predictor(torch.nn.Module):
    """A classifier that returns only the class index (what a prediction service exposes)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).argmax(1)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_hopskipjump_finds_the_distance_to_a_known_boundary_within_its_query_budget(norm):
    from amulet_audit.risks.evasion_decision import hopskipjump

    rng = np.random.default_rng(0)
    w = rng.normal(size=8)
    module = _Linear(w, 0.3).eval()
    x = rng.normal(size=(200, 8)).astype(np.float32)
    y = (x @ w + 0.3 > 0).astype(np.int64)
    y[:10] = 1 - y[:10]  # misclassified: adversarial as they are
    out = hopskipjump(module, x, y, norm=norm, queries=1500, seed=0)
    # the exact distance to the hyperplane: |w.x + b| / ||w||_2 (L2), / ||w||_1 (L-inf, the dual norm)
    truth = np.abs(x.astype(np.float64) @ w + 0.3) / np.linalg.norm(w, 2 if norm == "l2" else 1)
    assert np.all(out["distance"][:10] == 0)
    found = out["distance"][10:]
    assert np.all(found >= truth[10:] * (1 - 1e-3))  # never closer than the boundary: every point was adversarial
    assert np.median(found / truth[10:]) < 1.05  # and close to it
    assert out["queries"].max() <= 1500
    adv = torch.as_tensor(out["adversarial"][10:])
    assert (module(adv).argmax(1).numpy() != y[10:]).all()
    again = hopskipjump(module, x, y, norm=norm, queries=1500, seed=0)
    assert np.array_equal(again["distance"], out["distance"])


@pytest.mark.parametrize("norm, eps", [("l2", 0.3), ("linf", 0.15)])
def test_hopskipjump_is_no_stronger_than_pgd_yet_finds_adversarial_examples(tabular_inputs, norm, eps):
    model, data = tabular_inputs
    pgd = _run("pgd", model, data, eps=eps, norm=norm, steps=50, restarts=2, samples=300)
    hsj = _run("hopskipjump", model, data, eps=eps, norm=norm, samples=300)
    p, h = pgd.metrics["robust_accuracy"], hsj.metrics["robust_accuracy"]
    assert h.n == p.n == 300 and hsj.metrics["clean_accuracy"].value == pgd.metrics["clean_accuracy"].value
    # same records: labels alone cannot beat the white-box attack beyond a few records of noise ...
    assert h.value >= p.value - 0.02, (h.value, p.value)
    # ... but on this smooth model the decision-based attack gets close to it
    assert h.value <= p.value + 0.06, (h.value, p.value)
    assert h.value < hsj.metrics["clean_accuracy"].value - 0.05
    large = [c for c in hsj.details["curve"] if c.get("check") == "large_eps"]
    assert large and large[0]["robust_accuracy"] <= 0.05 and not hsj.details["warnings"]
    per = hsj.details["queries_per_record"]
    assert 0 < per["mean"] and per["max"] <= per["budget"] == 2000
    assert hsj.details["queries_total"] > 300 * 100


@pytest.fixture(scope="module")
def label_model(tabular, tmp_path_factory):
    """The tabular MLP behind an interface that returns the class index only, loaded as a user's files are."""
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.ops.scores import attach

    folder = tmp_path_factory.mktemp("labels")
    shutil.copy(tabular.with_name("data.csv"), folder / "data.csv")
    shutil.copy(tabular.with_name("model.data.yaml"), folder / "model.data.yaml")
    torch.jit.save(torch.jit.script(_Predictor(torch.jit.load(str(tabular)))), folder / "model.pt")
    data = load_data(folder / "model.data.yaml")
    handle = attach(load_model(folder / "model.pt"), data)
    assert handle.output == "labels"
    return handle, data


def test_label_only_attacks_run_on_a_label_only_model_and_the_others_name_them(label_model, tabular_inputs):
    labels, data = label_model
    scores, _ = tabular_inputs
    for name, params in (("hopskipjump", {"eps": 0.3, "samples": 100, "queries": 500}),
                         ("label_only", {"samples": 200, "copies": 5})):
        a, b = _run(name, labels, data, **params), _run(name, scores, data, **params)
        assert not a.not_applicable and all(m.value is not None for m in a.metrics.values()), name
        # the labels are all either attack reads: the same answer from the label-only and the logit model
        for metric in a.metrics:
            assert a.metrics[metric].value == pytest.approx(b.metrics[metric].value, abs=1e-12), (name, metric)
    pgd = _run("pgd", labels, data, eps=0.3)
    assert pgd.metrics["robust_accuracy"].value is None
    assert "labels only" in pgd.metrics["robust_accuracy"].reason and "hopskipjump" in pgd.metrics["robust_accuracy"].reason
    for name in ("loss", "lira", "rmia"):
        refused = _run(name, labels, data)
        assert refused.not_applicable.endswith("the label-only attack label_only runs on this model instead"), name
        assert refused.not_applicable.count(". ") == 0
    # a model with scores names no alternative: nothing is missing
    assert _run("loss", scores, data, samples=50).not_applicable == ""


@pytest.fixture(scope="module")
def overfit_and_regularised(tmp_path_factory):
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model

    out = []
    # noisy labels (noise 2.0): the overfit model can only fit its 200 records by memorising them
    for name, kw in (("overfit", dict(n_members=200, epochs=400, hidden=128, noise=2.0)),
                     ("regularised", dict(n_members=1200, epochs=8, hidden=16, weight_decay=0.01, noise=2.0))):
        path = make_tabular(tmp_path_factory.mktemp(name), n=1600, seed=3, **kw)
        out.append((load_model(path), load_data(path.with_name("model.data.yaml"))))
    return out


@pytest.mark.parametrize("method", ["noise", "boundary"])
def test_label_only_membership_exposes_an_overfit_model_more_than_a_regularised_one(overfit_and_regularised, method):
    (over, over_data), (reg, reg_data) = overfit_and_regularised
    a = _run("label_only", over, over_data, method=method, samples=200)
    b = _run("label_only", reg, reg_data, method=method, samples=200)
    auc_a, auc_b = a.metrics["auc"], b.metrics["auc"]
    assert auc_a.ci[0] > 0.58, auc_a  # clearly above chance ...
    assert auc_a.value > auc_b.value + 0.1, (auc_a.value, auc_b.value)  # ... and clearly above the regularised model
    assert auc_b.value < 0.6
    assert a.details["n_members"] == a.details["n_nonmembers"] == 200 and a.details["queries_total"] > 400
    assert {"auc", "advantage", "tpr_at_fpr_0.01", "tpr_at_fpr_0.001"} == set(a.metrics)


def test_noise_robustness_flips_binary_features_and_moves_the_others():
    from amulet_audit.risks.membership_label import binary_features, noise_robustness

    class _FirstFlag(torch.nn.Module):  # class 1 exactly when the binary feature 0 is set
        def forward(self, x):
            z = (x[:, 0] > 0.5).float() * 10 - 5
            return torch.stack([torch.zeros_like(z), z], dim=1)

    x = np.array([[1.0, 0.3], [0.0, -2.0], [1.0, 5.0], [0.0, 1.0]], dtype=np.float32)
    y = np.array([1, 0, 1, 1])  # the last record is misclassified
    assert binary_features(x).tolist() == [True, False]
    clean, never, q = noise_robustness(_FirstFlag(), x, y, scales=[0.5, 1.0], copies=4, spread=np.ones(2), flip=0.0)
    assert clean.tolist() == [1, 1, 1, 0] and q == 4 * (1 + 2 * 4)
    # Gaussian noise leaves the binary feature, and so the label, alone
    assert never.shape == (4, 2) and np.all(never[:3] == 1.0) and np.all(never[3] == 0.0)
    _, always, _ = noise_robustness(_FirstFlag(), x, y, scales=[1.0], copies=4, spread=np.ones(2), flip=1.0)
    assert always[:, 0].tolist() == [0, 0, 0, 1]  # every copy flipped: the label flips with it
