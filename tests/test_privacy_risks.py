"""Attribute inference, model inversion and property inference on real (small) models: the behaviour that matters."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from amulet_audit.inputs.data import TrainingRecipe, load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.risks.attribute import AttributeInference, balanced_accuracy
from amulet_audit.risks.distribution import PropertyInference
from amulet_audit.risks.reconstruction import ModelInversion

from conftest import ROOT, context, make_tabular


def _as_json(result) -> str:
    return json.dumps({"metrics": {k: [m.value, m.ci, m.n] for k, m in result.metrics.items()},
                       "details": result.details, "na": result.not_applicable}, sort_keys=True)


def _write_task(folder: Path, x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, members: int, attr: str,
                hidden: int = 32, epochs: int = 10, seed: int = 0) -> Path:
    """Data (csv), a scripted MLP trained on the first `members` records, and its sidecar spec; returns the model."""
    import pandas as pd
    import torch

    from amulet_audit.training.loop import train_model

    folder.mkdir(parents=True, exist_ok=True)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    df[attr] = groups
    df["label"] = y.astype(int)
    df["split"] = np.where(np.arange(len(y)) < members, "train", "holdout")
    df.to_csv(folder / "data.csv", index=False)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(x.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    recipe = TrainingRecipe(epochs=epochs, batch_size=64, lr=0.01)
    train_model(model, x[:members].astype(np.float32), y[:members].astype(np.int64), recipe, seed=seed)
    torch.jit.save(torch.jit.script(model), folder / "model.pt")
    spec = {"name": folder.name, "source": {"format": "csv", "path": "data.csv"}, "features": {"exclude": [attr]},
            "target": "label", "sensitive": [attr], "training": recipe.model_dump()}
    (folder / "model.data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "model.pt"


def _inputs(path: Path):
    return load_model(path), load_data(path.with_name("model.data.yaml"))


# --- attribute inference -----------------------------------------------------------------------


def test_balanced_accuracy_is_mean_recall_as_scikit_learn_computes_it():
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 3, 500), rng.integers(0, 3, 500)
    assert balanced_accuracy(t, p, 3) == pytest.approx(balanced_accuracy_score(t, p))
    assert balanced_accuracy(t, np.zeros_like(t), 3) == pytest.approx(1 / 3)  # any constant guess: 1/k


def test_attribute_inference_finds_an_attribute_the_model_uses_and_not_one_it_cannot_see(tmp_path):
    rng = np.random.default_rng(3)
    n = 3000
    sex = rng.choice(["F", "M"], n)
    x = rng.normal(size=(n, 4))
    x[:, 3] = sex == "M"  # the attribute is a model input and moves the decision
    y = x[:, 0] + 2.0 * x[:, 3] + rng.normal(scale=0.5, size=n) > 1.0
    leaky = _write_task(tmp_path / "leaky", x, y, sex, members=1500, attr="sex")
    blind = make_tabular(tmp_path / "blind", n=3000, bias=0.0, epochs=8)  # features independent of the attribute

    leak = AttributeInference().run(context(*_inputs(leaky)))
    none = AttributeInference().run(context(*_inputs(blind)))
    adv, adv0 = leak.metrics["advantage_over_prior"], none.metrics["advantage_over_prior"]
    assert adv.value > 0.15 and adv.ci[0] > 0.05
    assert leak.metrics["balanced_accuracy"].value == pytest.approx(0.5 + adv.value)  # binary prior: 0.5
    assert abs(adv0.value) < 0.03 and adv0.ci[0] <= 0.0 + 0.01
    assert leak.details["by_attribute"]["sex"]["n_victims"] == 1500  # victims are the training records


def test_a_proxy_leaks_against_the_prior_but_not_beyond_imputation_from_the_features(tabular_inputs):
    """Jayaraman & Evans (2022): what the other features already imply is not the model's disclosure."""
    ctx = context(*tabular_inputs)
    outputs_only = AttributeInference().run(ctx).metrics["advantage_over_prior"]
    with_features = AttributeInference(use_features=True).run(ctx).metrics["advantage_over_prior"]
    assert outputs_only.ci[0] > 0.03  # the model's output carries the proxy feature
    assert abs(with_features.value) < 0.03 and with_features.ci[0] < 0.01


def test_attribute_inference_is_deterministic_and_not_applicable_without_a_sensitive_attribute(tabular_inputs, digits_inputs):
    ctx = context(*tabular_inputs, seed=5)
    assert _as_json(AttributeInference(classifier="logistic").run(ctx)) == \
        _as_json(AttributeInference(classifier="logistic").run(ctx))
    out = AttributeInference().run(context(*digits_inputs))
    assert out.not_applicable == "the data spec names no sensitive attribute" and not out.metrics
    assert "not a sensitive attribute" in AttributeInference(attribute="race").run(ctx).not_applicable


# --- model inversion ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits_inputs(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("_privacy_digits_train", ROOT / "examples" / "digits" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("digits")
    module.main(["--out", str(out), "--epochs", "15"])
    return load_model(out / "model.pt"), load_data(out / "model.data.yaml")


def test_model_inversion_on_digits_gives_class_like_images_far_closer_than_noise(digits_inputs):
    model, data = digits_inputs
    out = ModelInversion().run(context(model, data))
    images = np.asarray(out.details["images"]["reconstructions"])
    assert images.shape == (10, 1, 8, 8) and images.min() >= 0.0 and images.max() <= 1.0
    # Class-like, judged without the model: the nearest class mean of unseen images is the target class.
    means = np.stack([data.x_holdout[data.y_holdout == c].mean(axis=0) for c in range(10)])
    nearest = [int(np.argmin(((means - images[c]) ** 2).sum(axis=(1, 2, 3)))) for c in range(10)]
    assert sum(n == c for c, n in enumerate(nearest)) >= 8
    classes = out.details["classes"]
    assert all(c["target_probability"] > 0.9 for c in classes)
    assert all(c["similarity_member"] > c["noise_similarity_member"] + 0.1 for c in classes)
    m = out.metrics["reconstruction_similarity"]
    assert m.n == 10 and m.ci[0] <= m.value <= m.ci[1]
    assert abs(m.value) < 0.02  # a CNN that generalises gives prototypes, not a training image
    assert _as_json(out) == _as_json(ModelInversion().run(context(model, data)))


def test_model_inversion_recovers_more_of_a_model_that_memorised_a_few_images(tmp_path, digits_inputs):
    spec = importlib.util.spec_from_file_location("_privacy_digits_train", ROOT / "examples" / "digits" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--out", str(tmp_path), "--epochs", "200", "--n-train", "20"])  # two images per digit
    few = ModelInversion().run(context(load_model(tmp_path / "model.pt"), load_data(tmp_path / "model.data.yaml")))
    many = ModelInversion().run(context(*digits_inputs))
    memorised = few.metrics["reconstruction_similarity"]
    assert memorised.ci[0] > 0.0  # nearer its own training images than unseen images of the same digit
    assert memorised.value > many.metrics["reconstruction_similarity"].value + 0.01


def test_model_inversion_stays_within_the_training_range_on_tabular_data(tabular_inputs):
    model, data = tabular_inputs
    out = ModelInversion(steps=30, restarts=2).run(context(model, data))
    assert "images" not in out.details and out.details["bounds"].startswith("per-feature min/max")
    assert out.metrics["reconstruction_similarity"].n == 2
    assert all(c["similarity_member"] > c["noise_similarity_member"] for c in out.details["classes"])


def test_inversion_prior_pulls_reconstructions_to_the_start():
    import torch

    from amulet_audit.risks.reconstruction import invert

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 2)).eval()
    x0, lo, hi = np.zeros(3, np.float32), -np.ones(3, np.float32), np.ones(3, np.float32)
    free, _ = invert(net, 2, x0, lo, hi, restarts=1, steps=100, step_size=0.05, prior=0.0, seed=0)
    held, _ = invert(net, 2, x0, lo, hi, restarts=1, steps=100, step_size=0.05, prior=50.0, seed=0)
    assert np.abs(held).max() < np.abs(free).max()
    assert free.min() >= -1.0 and free.max() <= 1.0  # projected onto the bounds


# --- property inference ------------------------------------------------------------------------


def _group_task(folder: Path, share: float, *, n: int = 3000, seed: int = 0) -> Path:
    """Group A's label follows f1, group B's follows f2; f0 hints at the group. The share of A in training decides
    which rule the model applies where f0 is ambiguous, so the property changes the learned function."""
    rng = np.random.default_rng(seed)
    groups = np.where(rng.random(n) < share, "A", "B")
    x = rng.normal(size=(n, 5))
    x[:, 0] += np.where(groups == "A", 1.0, -1.0)
    y = np.where(groups == "A", x[:, 1] > 0, x[:, 2] > 0)
    return _write_task(folder, x, y, groups, members=n // 4, attr="grp", hidden=16)


def test_property_inference_tells_the_shares_apart_where_the_property_matters(tmp_path, tabular_inputs):
    model, data = _inputs(_group_task(tmp_path / "groups", share=0.2))
    out = PropertyInference(models=5).run(context(model, data))
    acc = out.metrics["distinguishing_accuracy"]
    assert acc.n == 10 and acc.value >= 0.9 and acc.ci[0] > 0.5
    assert out.details["group"] == "A" and out.details["ratios"] == [0.5, 0.2]
    assert out.details["audited_predicted_ratio"] == 0.2  # the audited model was trained with a 20 % share
    scores = out.details["reference_scores"]  # out of fold, per share; above 0.5 reads as the second share
    assert [len(s) for s in scores] == [5, 5]
    assert [np.mean(np.array(s) > 0.5) for s in scores] == pytest.approx([1 - out.details["per_ratio_accuracy"][0],
                                                                          out.details["per_ratio_accuracy"][1]])
    assert _as_json(out) == _as_json(PropertyInference(models=5).run(context(model, data)))

    # When the label rule is the same for both groups the share leaves the learned function alone.
    flat = PropertyInference(models=5).run(context(*tabular_inputs)).metrics["distinguishing_accuracy"]
    assert flat.ci[0] < 0.5 and flat.value < acc.value


def test_property_inference_refuses_what_it_cannot_measure(tabular_inputs, digits_inputs):
    ctx = context(*tabular_inputs)
    assert "no holdout record" in PropertyInference(group="X").run(ctx).not_applicable
    assert PropertyInference().run(context(*digits_inputs)).not_applicable == "the data spec names no sensitive attribute"
    from amulet_audit.core.params import validate_params

    problems = validate_params("property_inference", PropertyInference.parameter_constraints, {"ratios": [0.5, 0.5]})
    assert problems and "two different shares" in problems[0]


# --- report and policy -------------------------------------------------------------------------


def test_report_builders_draw_the_recorded_evidence(digits_inputs, tabular_inputs):
    from amulet_audit.report import document as doc
    from amulet_audit.report.format import fmt_number
    from amulet_audit.report.nodes import Chart, Table
    from amulet_audit.results.model import Run

    def run(attack, details):
        return Run(id="r1", attack=attack, details=details)

    inversion = ModelInversion(steps=20, restarts=1).run(context(*digits_inputs)).details
    blocks = doc.EVIDENCE["data_reconstruction"](run("model_inversion", inversion), [])
    chart = blocks[0]
    assert isinstance(chart, Chart) and str(chart.svg).startswith("<svg") and "data:image/png;base64" in chart.svg
    assert isinstance(blocks[1], Table) and len(blocks[1].rows) == 10

    attribute = AttributeInference(classifier="logistic").run(context(*tabular_inputs)).details
    table, chart = doc.EVIDENCE["attribute_inference"](run("attribute_inference", attribute), [])[:2]
    assert table.rows[0][0] == "sex" and table.rows[0][1] == fmt_number(attribute["by_attribute"]["sex"]["balanced_accuracy"])
    # per group: the attack's and the baseline's recall as bars, with the chance level
    assert isinstance(chart, Chart) and chart.title == "Attribute inference per sex group"
    assert 'aria-label="Share of each sex group inferred correctly' in chart.svg

    details = {"attribute": "sex", "group": "F", "ratios": [0.5, 0.2], "per_ratio_accuracy": [1.0, 0.5],
               "models_per_ratio": 6, "audited_probabilities": {"0.5": 0.7, "0.2": 0.3},
               "audited_predicted_ratio": 0.5, "audited_probability": 0.7, "audited_actual_ratio": 0.48}
    blocks = doc.EVIDENCE["distribution_inference"](run("property_inference", details), [])
    assert blocks[0].rows[0] == ("50% sex = F", "1.000", "6", "0.700")
    assert ("Predicted share for the audited model", "50%") in blocks[1].rows
    # with the reference models' out-of-fold scores recorded, they are drawn first, the audited model marked
    scored = doc.EVIDENCE["distribution_inference"](
        run("property_inference", {**details, "reference_scores": [[0.1, 0.2], [0.9, 0.4]]}), [])
    assert isinstance(scored[0], Chart) and "audited model" in scored[0].caption and scored[1:] == blocks


def test_eu_ai_act_cites_confidentiality_attacks_for_the_three_privacy_risks():
    from amulet_audit.policy.load import load_policy

    policy = load_policy("eu_ai_act").policy
    by_risk = {r.risk: r for r in policy.requirements}
    for risk in ("attribute_inference", "data_reconstruction", "distribution_inference"):
        assert "Art. 15(5)" in by_risk[risk].cite and by_risk[risk].basis == "benchmark" and by_risk[risk].rationale
    assert "GDPR Art. 5(1)(f)" in by_risk["attribute_inference"].cite
    assert "GDPR Art. 5(1)(f)" in by_risk["data_reconstruction"].cite
