"""What the model outputs (issue 11, section 1): logits, log-probabilities, probabilities, a single logit for two
classes, or labels only. Detected from probe records or declared in the data spec; every attack reads scores
through one conversion, and every trained copy trains with the loss of its convention."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
import yaml

from amulet_audit.core.attack import PROFILES, AttackContext
from amulet_audit.core.errors import InputError
from amulet_audit.ops.scores import attach, detect, scores_module, to_log_probabilities


# --- small fixtures ----------------------------------------------------------------------------------------------


def _write_task(folder: Path, *, n: int, classes: int, seed: int, spec_extra: dict | None = None) -> np.ndarray:
    """A noisy tabular task (6 features, `classes` classes, a sensitive `group`) written as data.csv; returns the
    arrays (x, y) of the whole table, the first half being the training split."""
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    score = x[:, 0] - x[:, 1] + x[:, 2] * x[:, 3] + rng.normal(0, 0.8, n)
    y = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1])).astype(np.int64)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    df["y"] = y
    df["group"] = rng.choice(["a", "b"], n)
    df["split"] = np.where(np.arange(n) < n // 2, "train", "holdout")
    df.to_csv(folder / "data.csv", index=False)
    return x, y


def _spec(folder: Path, stem: str, *, epochs: int, extra: dict | None = None) -> Path:
    spec = {"name": "conventions", "source": {"format": "csv", "path": "data.csv"},
            "features": [f"f{i}" for i in range(6)], "target": "y", "positive_label": 1, "sensitive": ["group"],
            "training": {"epochs": epochs, "batch_size": 64, "optimizer": "adam", "lr": 0.01}, **(extra or {})}
    path = folder / f"{stem}.data.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def _fit(module, x, y, loss, epochs: int, seed: int = 0):
    torch.manual_seed(seed)
    opt = torch.optim.Adam(module.parameters(), lr=0.01)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(epochs):
        for start in range(0, len(xt), 64):
            opt.zero_grad()
            loss(module(xt[start:start + 64]), yt[start:start + 64]).backward()
            opt.step()
    return module.eval()


def _handle(model_path: Path, spec_path: Path):
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model

    data = load_data(spec_path)
    return attach(load_model(model_path), data), data


class TwoLogits(nn.Module):
    """A single-logit model z as the equivalent two-logit model [0, z]."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        z = self.inner(x)
        return torch.cat([torch.zeros_like(z), z], 1)


@pytest.fixture(scope="module")
def softmax_pair(tmp_path_factory):
    """A 3-class MLP trained with cross-entropy, saved with a final Softmax (model.pt) and without (body.pt)."""
    folder = tmp_path_factory.mktemp("softmax")
    x, y = _write_task(folder, n=600, classes=3, seed=1)
    torch.manual_seed(0)
    body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 3))
    _fit(body, x[:300], y[:300], nn.functional.cross_entropy, epochs=30)
    torch.jit.save(torch.jit.script(nn.Sequential(body, nn.Softmax(dim=1)).eval()), folder / "model.pt")
    torch.jit.save(torch.jit.script(body), folder / "body.pt")
    spec = _spec(folder, "model", epochs=30)
    return _handle(folder / "model.pt", spec), _handle(folder / "body.pt", spec)


@pytest.fixture(scope="module")
def single_logit_pair(tmp_path_factory):
    """A binary MLP with one output unit trained with BCE-with-logits (model.pt) and its two-logit twin (two.pt)."""
    folder = tmp_path_factory.mktemp("single")
    x, y = _write_task(folder, n=600, classes=2, seed=2)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
    _fit(net, x[:300], y[:300], lambda out, t: nn.functional.binary_cross_entropy_with_logits(out[:, 0], t.float()),
         epochs=30)
    torch.jit.save(torch.jit.script(net), folder / "model.pt")
    torch.jit.save(torch.jit.script(TwoLogits(net)), folder / "two.pt")
    spec = _spec(folder, "model", epochs=30)
    return _handle(folder / "model.pt", spec), _handle(folder / "two.pt", spec)


def _run(name: str, handle, data, **params):
    from amulet_audit.core import registry

    ctx = AttackContext(model=handle, data=data, seed=0, profile=PROFILES["quick"])
    return registry.attack_class(name)(**params).run(ctx)


def _values(result) -> dict[str, float]:
    return {k: m.value for k, m in result.metrics.items()}


# --- conversion and detection ------------------------------------------------------------------------------------


def test_conversion_gives_the_log_probabilities_of_each_convention():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    want = torch.log_softmax(z, 1)
    for out, convention in ((z, "logits"), (torch.log_softmax(z, 1), "log_probabilities"),
                            (torch.softmax(z, 1), "probabilities")):
        assert torch.allclose(to_log_probabilities(out, convention), want, atol=1e-6)
    s = torch.tensor([[1.5], [-0.3]])
    two = torch.log_softmax(torch.cat([torch.zeros_like(s), s], 1), 1)
    assert torch.allclose(to_log_probabilities(s, "single_logit"), two, atol=1e-6)
    assert torch.allclose(to_log_probabilities(s[:, 0], "single_logit"), two, atol=1e-6)  # shape (n,)
    assert torch.allclose(to_log_probabilities(torch.sigmoid(s), "probabilities"), two, atol=1e-6)
    labels = to_log_probabilities(torch.tensor([2, 0]), "labels", 3)
    assert labels.argmax(1).tolist() == [2, 0] and labels.max(1).values.abs().max() < 1e-6


class _Argmax(nn.Module):
    def __init__(self, one_hot: bool = False):
        super().__init__()
        self.net = nn.Linear(4, 3)
        self.one_hot = one_hot

    def forward(self, x):
        idx = self.net(x).argmax(1)
        return nn.functional.one_hot(idx, 3) if self.one_hot else idx


@pytest.mark.parametrize("module, k, expected", [
    (nn.Linear(4, 3), 3, "logits"),
    (nn.Sequential(nn.Linear(4, 3), nn.LogSoftmax(dim=1)), 3, "log_probabilities"),
    (nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1)), 3, "probabilities"),
    (nn.Sequential(nn.Linear(4, 3), nn.Sigmoid()), 3, "probabilities"),
    (nn.Sequential(nn.Linear(4, 1), nn.Sigmoid()), 2, "probabilities"),
    (nn.Linear(4, 1), 2, "single_logit"),
    (nn.Sequential(nn.Linear(4, 1), nn.Flatten(0)), 2, "single_logit"),  # output shape (n,)
    (_Argmax(), 3, "labels"),
    (_Argmax(one_hot=True), 3, "labels"),
])
def test_detection_reads_each_convention(module, k, expected):
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    reading = detect(module.eval(), x, k)
    assert reading.convention == expected, reading.evidence
    assert reading.source == "detected" and reading.evidence


def test_detection_refuses_outputs_that_fit_no_convention():
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32)
    with pytest.raises(InputError, match="3 classes"):
        detect(nn.Linear(4, 5), x, 3)
    with pytest.raises(InputError, match="one column"):
        detect(nn.Linear(4, 1), x, 3)


class _ClassValues(nn.Module):
    """A label-only model that returns class values 1..k (argmax + 1) as floats, not indices 0..k-1."""

    def __init__(self, k: int):
        super().__init__()
        self.net = nn.Linear(4, k)

    def forward(self, x):
        return (self.net(x).argmax(1, keepdim=True) + 1).float()


@pytest.mark.parametrize("k", [2, 3])
def test_whole_number_outputs_outside_the_indices_are_refused_not_read_as_a_logit(k):
    """Outputs 1/2 from a two-class label-only model would otherwise pass as a single logit (every record class 1)."""
    torch.manual_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    with pytest.raises(InputError, match=r"whole numbers \(1, 2.*not class indices 0\.\.%d.*label-only" % (k - 1)):
        detect(_ClassValues(k).eval(), x, k)


def test_an_output_without_gradient_gives_no_ascent_direction_not_an_error():
    """A model whose output does not depend differentiably on its input: the gradient attacks find no direction
    (their masking checks then say so) instead of failing."""
    from amulet_audit.ops.perturb import loss_grad

    x = torch.randn(8, 4)
    values, grad, wrong = loss_grad(lambda t: torch.ones(len(t), 2), x, torch.zeros(8, dtype=torch.long))
    assert torch.equal(grad, torch.zeros_like(x)) and values.shape == (8,) and not wrong.any()


def test_the_data_spec_overrides_detection_and_is_checked():
    x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    softmax = nn.Sequential(nn.Linear(4, 3), nn.Softmax(dim=1))
    reading = detect(softmax, x, 3, declared="logits")
    assert reading.convention == "logits" and reading.source == "data spec"
    assert any("look like probabilities" in w for w in reading.warnings)  # said, not silently taken
    assert detect(nn.Linear(4, 1), x, 2, declared="single_logit").warnings == []
    with pytest.raises(InputError, match="key 'output'.*not probabilities"):
        detect(nn.Linear(4, 3), x, 3, declared="probabilities")
    with pytest.raises(InputError, match="key 'output'.*two-class"):
        detect(nn.Linear(4, 3), x, 3, declared="single_logit")


def test_the_data_spec_key_reaches_the_audited_model(single_logit_pair, tmp_path):
    (handle, data), _ = single_logit_pair
    assert handle.output == "single_logit" and "detected" in handle.output_note
    spec = yaml.safe_load(data.spec_path.read_text())
    spec["output"] = "single_logit"
    path = data.spec_path.with_name("declared.data.yaml")
    path.write_text(yaml.safe_dump(spec))
    declared, _ = _handle(handle.path, path)
    assert declared.output == "single_logit" and "data spec" in declared.output_note
    spec["output"] = "labels"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(InputError, match="class indices"):
        _handle(handle.path, path)


# --- a Softmax model is audited as its logits -----------------------------------------------------------------------


def test_softmax_model_gives_the_numbers_of_its_logits(softmax_pair):
    (soft, data), (body, _) = softmax_pair
    assert soft.output == "probabilities" and body.output == "logits"
    for name, params in (("loss", {}), ("pgd", {"eps": 0.3, "steps": 10})):
        a, b = _values(_run(name, soft, data, **params)), _values(_run(name, body, data, **params))
        assert a.keys() == b.keys()
        for metric in a:
            assert a[metric] == pytest.approx(b[metric], abs=1e-9), (name, metric)
    a = _run("lira", soft, data, n_reference=4)
    b = _run("lira", body, data, n_reference=4)
    # reference copies of the Softmax model train with NLL on log(Softmax output): as the body trains with
    # cross-entropy, up to float noise (not a double softmax)
    assert a.metrics["auc"].value == pytest.approx(b.metrics["auc"].value, abs=0.02)
    assert a.metrics["auc"].value > 0.55


def test_copies_of_a_softmax_model_train_like_copies_of_its_logits(softmax_pair):
    from amulet_audit.ops.forward import clean_accuracy, predict
    from amulet_audit.training.copies import train_copy

    (soft, data), (body, _) = softmax_pair
    recipe = data.spec.training
    copy_soft = train_copy(soft, data.x_train, data.y_train, recipe, seed=3)
    copy_body = train_copy(body, data.x_train, data.y_train, recipe, seed=3)
    # same initialisation and batches; NLL on log(Softmax(z)) has the gradient of cross-entropy on z
    agree = float((predict(copy_soft, data.x_holdout) == predict(copy_body, data.x_holdout)).mean())
    assert agree > 0.97
    assert clean_accuracy(copy_soft, data) == pytest.approx(clean_accuracy(soft.module, data), abs=0.06)


def test_the_loss_of_each_convention():
    from amulet_audit.training.loop import loss_for

    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    y = torch.tensor([0, 2])
    ce = nn.functional.cross_entropy(z, y, reduction="none")
    assert torch.allclose(loss_for("logits")(z, y), ce)
    assert torch.allclose(loss_for("log_probabilities")(torch.log_softmax(z, 1), y), ce)
    assert torch.allclose(loss_for("probabilities")(torch.softmax(z, 1), y), ce, atol=1e-6)
    s, t = torch.tensor([[1.5], [-0.3]]), torch.tensor([1, 1])
    bce = nn.functional.binary_cross_entropy_with_logits(s[:, 0], t.float(), reduction="none")
    assert torch.allclose(loss_for("single_logit")(s, t), bce)
    assert torch.allclose(loss_for("probabilities")(torch.sigmoid(s), t), bce, atol=1e-6)
    with pytest.raises(ValueError, match="labels only"):
        loss_for("labels")


# --- a single logit ----------------------------------------------------------------------------------------------------


def test_single_logit_model_audits_as_its_two_logit_equivalent(single_logit_pair):
    (single, data), (two, _) = single_logit_pair
    assert single.output == "single_logit" and two.output == "logits"
    for name, params in (("loss", {}), ("pgd", {"eps": 0.2, "steps": 10})):
        a, b = _values(_run(name, single, data, **params)), _values(_run(name, two, data, **params))
        for metric in a:
            assert a[metric] == pytest.approx(b[metric], abs=1e-9), (name, metric)
    # the same network ending in a Sigmoid (P(class 1), the usual BCELoss model) reads as the same classifier
    sigmoid_path = single.path.with_name("sigmoid.pt")
    torch.jit.save(torch.jit.script(nn.Sequential(torch.jit.load(str(single.path)), nn.Sigmoid())), sigmoid_path)
    sigmoid, _ = _handle(sigmoid_path, data.spec_path)
    assert sigmoid.output == "probabilities"
    for name, params in (("loss", {}), ("pgd", {"eps": 0.2, "steps": 10})):
        a, b = _values(_run(name, sigmoid, data, **params)), _values(_run(name, single, data, **params))
        for metric in a:
            assert a[metric] == pytest.approx(b[metric], abs=1e-9), (name, metric)
    a = _run("lira", single, data, n_reference=4)
    b = _run("lira", two, data, n_reference=4)
    assert not a.not_applicable
    assert a.metrics["auc"].value == pytest.approx(b.metrics["auc"].value, abs=0.03)


def test_single_logit_copies_train_with_binary_cross_entropy(single_logit_pair):
    from amulet_audit.ops.forward import clean_accuracy, logits
    from amulet_audit.training.copies import train_copy
    from amulet_audit.training.reference import train_reference_models

    (single, data), _ = single_logit_pair
    copy = train_copy(single, data.x_train, data.y_train, data.spec.training, seed=1)
    assert logits(copy, data.x_holdout[:5]).shape == (5, 2)  # per-class scores, as the audited module gives
    assert clean_accuracy(copy, data) == pytest.approx(clean_accuracy(single.module, data), abs=0.06)

    # the vectorised trainer's chain kernel (BCE gradient written out) agrees with one-at-a-time training
    plain = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 1))
    import dataclasses

    handle = dataclasses.replace(single, format="state_dict", module=plain.eval(), raw=None)
    masks = np.zeros((2, len(data.x_train)), dtype=bool)
    masks[0, ::2] = masks[1, 1::2] = True
    refs = train_reference_models(handle, data.x_train, data.y_train, masks, data.spec.training, seed=5)
    assert refs.details["kernel"].startswith("batched matrix products")
    from amulet_audit.training.loop import train_model

    one = handle.fresh_copy(5)
    train_model(one, data.x_train[masks[0]], data.y_train[masks[0]], data.spec.training, seed=5, output="single_logit")
    want = logits(scores_module(one, "single_logit"), data.x_holdout)
    assert np.allclose(refs.logits(data.x_holdout)[0], want, atol=1e-3)


# --- labels only ------------------------------------------------------------------------------------------------------


class _Predictor(nn.Module):
    """A classifier that returns only the class index (what a prediction service exposes)."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x).argmax(1)


def test_label_only_model_is_measured_where_predictions_suffice(softmax_pair, tmp_path):
    from amulet_audit.policy import load_policy
    from amulet_audit.report import write_report
    from amulet_audit.run import run_audit

    (_, data), (body, _) = softmax_pair
    folder = data.spec_path.parent
    torch.jit.save(torch.jit.script(_Predictor(torch.jit.load(str(body.path)))), folder / "labels.pt")
    handle, data = _handle(folder / "labels.pt", data.spec_path)
    assert handle.output == "labels"
    policy = tmp_path / "policy.yaml"
    req = lambda i, risk, attack, params, metric, op: {"id": i, "risk": risk, "attack": {"name": attack, "params": params},
                                                       "metric": metric, "threshold": {op: 0.5}}
    policy.write_text(yaml.safe_dump({"policy": "labels", "title": "Label-only", "requirements": [
        req("accuracy", "evasion", "pgd", {"eps": 0.1, "steps": 5}, "clean_accuracy", "min"),
        req("robust", "evasion", "pgd", {"eps": 0.1, "steps": 5}, "robust_accuracy", "min"),
        req("mia", "membership_inference", "loss", {}, "auc", "max"),
        req("lira", "membership_inference", "lira", {"n_reference": 2}, "auc", "max"),
        req("parity", "discrimination", "group_fairness", {"min_group_size": 10}, "demographic_parity_difference", "max"),
        req("steal", "model_extraction", "extraction", {"access": "labels", "queries": 100}, "fidelity", "max"),
        req("steal-p", "model_extraction", "extraction", {"access": "probabilities", "queries": 100}, "fidelity", "max"),
        req("poison", "poisoning", "label_flip", {}, "accuracy_drop", "max"),
    ], "interactions": {"defenses": ["adversarial_training"]}}))
    result = run_audit(handle, data, load_policy(str(policy)), seed=0, profile=PROFILES["quick"])
    rows = {r.id: r for r in result.requirements}
    assert result.model_output == "labels"
    body_accuracy = float(np.mean(body.module(torch.as_tensor(data.x_holdout)).argmax(1).numpy() == data.y_holdout))
    assert rows["accuracy"].value == pytest.approx(body_accuracy, abs=0.06)
    for measured in ("accuracy", "parity", "steal"):
        assert rows[measured].value is not None, rows[measured].reason
    # what needs gradients or scores is measured by the risk's label-only attack instead, at the same budget
    for instead, by in (("robust", "hopskipjump"), ("mia", "label_only"), ("lira", "label_only")):
        run = result.run_of(rows[instead])
        assert rows[instead].value is not None and run.attack == by, rows[instead].reason
        assert run.details["instead_of"]["attack"] == rows[instead].attack and "labels" in run.details["instead_of"]["reason"]
        assert f"measured instead by {by}" in rows[instead].warnings[0]
    assert result.run_of(rows["robust"]).params["eps"] == 0.1
    for refused in ("steal-p", "poison"):
        assert rows[refused].verdict == "not_applicable", refused
        assert "labels" in rows[refused].reason and rows[refused].reason.count(". ") == 0, rows[refused].reason
    assert rows["steal"].value > 0.6  # the adversary's own surrogate learns the labels
    assert "MLP" in result.run_of(rows["steal"]).details["surrogate"]
    assert "labels" in result.defenses[0].not_applicable
    write_report(result, tmp_path / "report", pdf=False)
    assert "Model output" in (tmp_path / "report" / "report.html").read_text()

    # recorded in results.json, optional on read (older results have none), and a change of it is a diff note
    import json

    from amulet_audit.results import read_results, write_results
    from amulet_audit.results.diff import compare

    write_results(result, tmp_path / "results.json")
    raw = json.loads((tmp_path / "results.json").read_text())
    assert raw["model_output"] == "labels" and "labels" in raw["model"]["output_note"]
    del raw["model_output"]
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert read_results(tmp_path / "old.json").model_output is None
    later = result.model_copy(update={"model_output": "logits"})
    assert any("output differently" in n for n in compare(result, later).notes)
