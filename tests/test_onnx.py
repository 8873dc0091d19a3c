"""ONNX models run with onnxruntime: scores only, so score-based and label-only attacks run and everything that needs
gradients or trained copies is NOT_APPLICABLE, naming the gradient-free attack that runs instead."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import warnings

import numpy as np
import pytest
import torch
import yaml

from conftest import context
from test_endpoint import stood_in

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

EVASION = {"eps": 0.3, "norm": "linf", "samples": 80}


def _eager(tabular):
    scripted = torch.jit.load(str(tabular))
    module = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 2))
    module.load_state_dict(scripted.state_dict())
    return module.eval()


def _export(module, path, n_features=6, output="logits"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(module, (torch.zeros(2, n_features),), str(path), dynamo=False, input_names=["x"],
                          output_names=[output], dynamic_axes={"x": {0: "n"}, output: {0: "n"}})
    return path


def _run(name, model, data, **params):
    from amulet_audit.core.registry import attack_class

    return attack_class(name)(**params).run(context(model, data))


@pytest.fixture(scope="module")
def onnx_inputs(tabular, tabular_inputs, tmp_path_factory):
    """(TorchScript handle, ONNX handle of the same MLP, data), both read through their output convention."""
    from amulet_audit.inputs.model import load_model
    from amulet_audit.ops.scores import attach

    scripted, data = tabular_inputs
    path = _export(_eager(tabular), tmp_path_factory.mktemp("onnx") / "model.onnx")
    return attach(scripted, data), attach(load_model(path), data), data


def test_an_onnx_export_gives_the_torchscript_models_scores_and_offers_scores_only(onnx_inputs):
    from amulet_audit.core.component import model_capabilities

    scripted, model, data = onnx_inputs
    assert model.format == "onnx" and model.output == "logits" and model.parameters == 6 * 32 + 32 + 32 * 2 + 2
    x = torch.as_tensor(data.x_holdout[:50])
    with torch.no_grad():
        assert torch.allclose(model.module(x), scripted.module(x), atol=1e-5)
    assert model_capabilities(model) == {"scores", "labels"} and model.functional_copy(0, x) is None
    with pytest.raises(RuntimeError, match="no trainable copies"):
        model.fresh_copy(0)
    # score-based attacks: the numbers of the TorchScript file
    for name, params in (("square", {**EVASION, "queries": 200}), ("loss", {"samples": 300})):
        a, b = _run(name, model, data, **params), _run(name, scripted, data, **params)
        assert not a.not_applicable
        for metric, m in a.metrics.items():
            assert m.value == pytest.approx(b.metrics[metric].value, abs=1e-9), (name, metric)
    # gradients and trained copies: not applicable, the reason naming the ONNX runtime and the attack instead
    pgd = _run("pgd", model, data, **EVASION)
    why = pgd.metrics["robust_accuracy"].reason
    assert pgd.metrics["clean_accuracy"].value is not None and pgd.metrics["robust_accuracy"].value is None
    assert "gradients" in why and "ONNX model" in why and why.endswith("the score-based attack square runs on this model instead")
    for name in ("lira", "rmia"):
        refused = _run(name, model, data).not_applicable
        assert "trainable copies" in refused and refused.endswith("the score-based attack loss runs on this model instead")
    assert "trainable copies" in _run("label_flip", model, data).not_applicable


def test_a_label_only_onnx_model_runs_the_label_only_attacks(tabular, tabular_inputs, tmp_path):
    from amulet_audit.core.component import model_capabilities
    from amulet_audit.inputs.model import load_model
    from amulet_audit.ops.scores import attach

    class Labels(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).argmax(dim=1)

    _, data = tabular_inputs
    model = attach(load_model(_export(Labels(_eager(tabular)), tmp_path / "labels.onnx", output="label")), data)
    assert model.output == "labels" and model_capabilities(model) == {"labels"}
    square = _run("square", model, data, **EVASION).not_applicable
    assert "per-class scores" in square and square.endswith("the label-only attack hopskipjump runs on this model instead")
    hsj = _run("hopskipjump", model, data, **{**EVASION, "samples": 30}, queries=200)
    assert hsj.metrics["robust_accuracy"].value is not None


def test_a_scikit_learn_model_converted_to_onnx_audits_with_the_attacks_its_access_allows(tabular, tmp_path):
    """A logistic regression exported by skl2onnx (ZipMap output: one {class: probability} per record), audited
    through the command line: score-based attacks and fairness measured, the rest not applicable with reasons."""
    skl2onnx = pytest.importorskip("skl2onnx")
    from sklearn.linear_model import LogisticRegression

    from amulet_audit.cli import main
    from amulet_audit.inputs.data import load_data

    shutil.copy(tabular.with_name("data.csv"), tmp_path / "data.csv")
    shutil.copy(tabular.with_name("model.data.yaml"), tmp_path / "model.data.yaml")
    data = load_data(tmp_path / "model.data.yaml")
    clf = LogisticRegression().fit(data.x_train, data.y_train)
    (tmp_path / "model.onnx").write_bytes(skl2onnx.to_onnx(clf, data.x_train[:1]).SerializeToString())
    policy = {"policy": "onnx-test", "title": "ONNX", "regulation": {"name": "t", "status": "in-force", "effective": "2026-08-02"},
              "requirements": [
                  {"id": "square", "title": "Square", "risk": "evasion", "metric": "robust_accuracy", "severity": "low",
                   "attack": {"name": "square", "params": {**EVASION, "queries": 100}}, "threshold": {"min": 0.5}},
                  {"id": "pgd", "title": "PGD", "risk": "evasion", "metric": "robust_accuracy", "severity": "low",
                   "attack": {"name": "pgd", "params": EVASION}, "threshold": {"min": 0.5}},
                  {"id": "loss", "title": "LOSS", "risk": "membership_inference", "attack": {"name": "loss"},
                   "metric": "auc", "threshold": {"max": 0.6}, "severity": "low"},
                  {"id": "lira", "title": "LiRA", "risk": "membership_inference", "attack": {"name": "lira"},
                   "metric": "auc", "threshold": {"max": 0.6}, "severity": "low"},
                  {"id": "impact", "title": "Impact", "risk": "discrimination", "metric": "impact_ratio",
                   "threshold": {"min": 0.8}, "severity": "low"}],
              "interactions": {"defenses": ["adversarial_training"]}}
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(tmp_path / "model.onnx"), "--policy", str(tmp_path / "policy.yaml"), "--out",
                     str(tmp_path / "out"), "--profile", "quick", "--quiet", "--no-pdf"])
    assert code in (0, 1), err.getvalue()
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    rows = {r["id"]: r for r in result["requirements"]}
    assert result["model"]["format"] == "onnx" and result["model_output"] == "probabilities"
    proba = clf.predict_proba(data.x_holdout[:5])
    from amulet_audit.inputs.model import load_model

    with torch.no_grad():
        assert np.allclose(load_model(tmp_path / "model.onnx").module(torch.as_tensor(data.x_holdout[:5])).numpy(),
                           proba, atol=1e-5)
    for rid in ("square", "loss", "impact"):
        assert rows[rid]["value"] is not None and rows[rid]["verdict"] != "not_applicable", rid
    assert stood_in(result, "pgd", "square") and stood_in(result, "lira", "loss")
    assert "trainable copies" in result["copy_fidelity"]["not_measured"]
    assert "gradients" in result["defenses"][0]["not_applicable"]  # adversarial training


def test_a_file_that_is_no_onnx_model_exits_2_with_one_sentence(tabular, tmp_path):
    from amulet_audit.cli import main

    (tmp_path / "model.onnx").write_bytes(b"not a protobuf at all")
    shutil.copy(tabular.with_name("data.csv"), tmp_path / "data.csv")
    shutil.copy(tabular.with_name("model.data.yaml"), tmp_path / "model.data.yaml")
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(tmp_path / "model.onnx"), "--policy", "eu_ai_act", "--out", str(tmp_path / "out")])
    assert code == 2 and "not an ONNX model onnxruntime can run" in err.getvalue()
    assert err.getvalue().count("\n") == 1
