"""Evasion that logit scale, gradient masking and units cannot fool (issue 12 §1): scale-invariant losses (APGD-DLR,
targeted DLR, the margin fall-back of PGD, Square), a value the audit marks as an upper bound never PASSes, and
budgets stated relative to the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from amulet_audit.core.verdict import Verdict, judge
from amulet_audit.inputs.data import load_data
from amulet_audit.inputs.model import load_model
from amulet_audit.ops.scores import attach
from amulet_audit.risks.evasion import APGD, FGSM, PGD, square_attack

from conftest import context


def _write(folder: Path, x: np.ndarray, y: np.ndarray, nets: dict) -> dict:
    """data.csv (half train, half holdout), one scripted model and data spec per entry of `nets`; returns
    name -> (ModelHandle with per-class scores, AuditData)."""
    import pandas as pd
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    d = x.shape[1]
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(d)])
    df["y"] = y
    df["split"] = np.where(np.arange(len(x)) < len(x) // 2, "train", "holdout")
    df.to_csv(folder / "data.csv", index=False)
    out = {}
    for name, net in nets.items():
        torch.jit.save(torch.jit.script(net), folder / f"{name}.pt")
        spec = {"name": name, "source": {"format": "csv", "path": "data.csv"},
                "split": {"column": "split", "train": "train", "holdout": "holdout"},
                "features": [f"f{i}" for i in range(d)], "target": "y"}
        (folder / f"{name}.data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        data = load_data(folder / f"{name}.data.yaml")
        out[name] = (attach(load_model(folder / f"{name}.pt"), data), data)
    return out


def _fit(x: np.ndarray, y: np.ndarray, classes: int, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.ReLU(), torch.nn.Linear(32, classes))
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    xt, yt = torch.tensor(x[: len(x) // 2]), torch.tensor(y[: len(x) // 2])
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    return net.eval()


def _confident(net, factor: float = 40.0):
    """The same network with its last layer (so its logits) multiplied by `factor`: the same decision everywhere."""
    import copy

    import torch

    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin[-1].weight.mul_(factor)
        twin[-1].bias.mul_(factor)
    return twin


@pytest.fixture(scope="module")
def binary(tmp_path_factory):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(1200, 6)).astype(np.float32)
    y = (x[:, 0] + 0.8 * x[:, 1] - 0.5 * x[:, 2] > 0).astype(np.int64)
    net = _fit(x, y, 2)
    return _write(tmp_path_factory.mktemp("binary"), x, y, {"plain": net, "confident": _confident(net)})


@pytest.fixture(scope="module")
def four_classes(tmp_path_factory):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(1200, 6)).astype(np.float32)
    y = (np.digitize(x[:, 0] + 0.7 * x[:, 1], [-0.8, 0.0, 0.8])).astype(np.int64)
    net = _fit(x, y, 4)
    return _write(tmp_path_factory.mktemp("four"), x, y, {"plain": net, "confident": _confident(net)})


def _robust(attack, pair) -> tuple[float, Verdict, dict]:
    model, data = pair
    out = attack.run(context(model, data))
    m = out.metrics["robust_accuracy"]
    verdict, _ = judge(m.value, m.ci, ">=", 0.5, m.reason, bound=m.bound, bound_reason=m.bound_reason)
    return m.value, verdict, out.details


def test_confident_model_has_underflowing_cross_entropy_gradient(binary):
    """The premise: on the 40x model, float32 cross-entropy gives a zero gradient on most records."""
    import torch
    import torch.nn.functional as F

    model, data = binary["confident"]
    x = torch.tensor(data.x_holdout[:300]).requires_grad_(True)
    loss = F.cross_entropy(model.module(x), torch.tensor(data.y_holdout[:300]), reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), x)
    assert (grad.abs().sum(1) == 0).float().mean() > 0.5


@pytest.mark.parametrize("cls", [FGSM, PGD, APGD], ids=lambda c: c.name)
def test_logits_times_40_get_the_same_robust_accuracy_and_verdict(cls, binary):
    params = {"eps": 0.3, "samples": 250} if cls is FGSM else {"eps": 0.3, "steps": 20, "samples": 250}
    plain = _robust(cls(**params), binary["plain"])
    confident = _robust(cls(**params), binary["confident"])
    assert abs(plain[0] - confident[0]) <= 0.01, (plain[0], confident[0])
    assert plain[1] == confident[1]
    assert plain[0] < 0.9  # the budget harms the model: the comparison is not between two untouched accuracies


def test_l2_apgd_with_square_is_scale_invariant(binary):
    params = {"eps": 0.5, "norm": "l2", "steps": 20, "samples": 250}
    plain, _, details = _robust(APGD(**params), binary["plain"])
    confident = _robust(APGD(**params), binary["confident"])[0]
    assert abs(plain - confident) <= 0.01 and plain < 0.9, (plain, confident)
    assert "square" in details["attacks"]


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_losses_are_scale_invariant_with_four_classes(loss, four_classes):
    params = {"eps": 0.25, "steps": 20, "samples": 250, "loss": loss}
    plain = _robust(PGD(**params), four_classes["plain"])[0]
    confident = _robust(PGD(**params), four_classes["confident"])[0]
    assert abs(plain - confident) <= 0.01, (plain, confident)


def test_apgd_runs_targeted_dlr_with_four_classes_and_is_scale_invariant(four_classes):
    params = {"eps": 0.25, "steps": 20, "samples": 250}
    plain, _, details = _robust(APGD(**params), four_classes["plain"])
    confident, _, details40 = _robust(APGD(**params), four_classes["confident"])
    assert abs(plain - confident) <= 0.01, (plain, confident)
    assert {"apgd-ce", "apgd-dlr", "apgd-t-dlr-1", "apgd-t-dlr-3", "pgd", "square"} <= set(details["attacks"])
    assert details["square_queries"] == APGD.budget("quick", "square_queries")
    # the scale-invariant losses, not APGD-CE, fool the confident model's records
    assert sum(v for k, v in details40["fooled_first_by"].items() if k != "apgd-ce") > 0
    pgd = _robust(PGD(**params), four_classes["plain"])[0]
    assert plain <= pgd + 0.005


class _Step:
    """A model whose scores are a step function of the input: zero gradient everywhere (gradient masking)."""

    def __new__(cls, w):
        import torch

        class Step(torch.nn.Module):
            def forward(self, x):
                z = torch.round(x @ w * 4) / 4  # piecewise constant: autograd returns 0
                return torch.log_softmax(torch.stack([-z, z], 1), 1)

        return Step().eval()


def test_square_attack_fools_a_model_without_gradients():
    import torch

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 6)).astype(np.float32)
    w = torch.tensor([1.0, 0.8, -0.5, 0, 0, 0])
    y = (x @ w.numpy() > 0).astype(np.int64)
    module = _Step(w)
    clean = float((module(torch.tensor(x)).argmax(1).numpy() == y).mean())
    robust = square_attack(module, x, y, eps=0.5, norm="linf", queries=300, bounds=None, seed=0).mean()
    assert robust < clean - 0.3, (clean, robust)
    bounded = torch.tensor(x)
    seen = []
    orig = module.forward
    module.forward = lambda inp: (seen.append(inp.detach().clone()), orig(inp))[1]
    square_attack(module, x, y, eps=0.5, norm="linf", queries=20, bounds=(-1.0, 1.0), seed=0)
    assert all(s.min() >= -1 and s.max() <= 1 for s in seen[1:]) and bounded.abs().max() > 1


def test_l2_square_attack_fools_a_model_without_gradients_within_the_ball():
    import torch

    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 6)).astype(np.float32)
    w = torch.tensor([1.0, 0.8, -0.5, 0, 0, 0])
    y = (x @ w.numpy() > 0).astype(np.int64)
    module = _Step(w)
    seen = []
    orig = module.forward
    module.forward = lambda inp: (seen.append(inp.detach().clone()), orig(inp))[1]
    clean = float((orig(torch.tensor(x)).argmax(1).numpy() == y).mean())
    robust = square_attack(module, x, y, eps=1.0, norm="l2", queries=300, bounds=None, seed=0).mean()
    assert robust < clean - 0.3, (clean, robust)
    seen.clear()
    square_attack(module, x[:20], y[:20], eps=1.0, norm="l2", queries=30, bounds=(-1.5, 1.5), seed=0)
    for s in seen[1:]:  # every query after the clean check: inside the bounds and within eps of some record
        assert s.min() >= -1.5 and s.max() <= 1.5
        dist = torch.cdist(s, torch.tensor(x[:20]).clamp(-1.5, 1.5)).min(1).values
        assert (dist <= 1.0 + 1e-4).all()


def test_masked_gradients_make_pgd_an_upper_bound_that_never_passes(tmp_path):
    """PGD on a step-function model finds nothing; its own large-budget check fires, so the robust accuracy is an
    upper bound and a `min` threshold cannot PASS. APGD (with Square) is not fooled by the masking."""
    import torch

    rng = np.random.default_rng(1)
    x = rng.normal(size=(800, 6)).astype(np.float32)
    w = torch.tensor([1.0, 0.8, -0.5, 0, 0, 0])
    y = (x @ w.numpy() > 0).astype(np.int64)
    import dataclasses

    pair = _write(tmp_path, x, y, {"step": _fit(x, y, 2)})["step"]
    model = dataclasses.replace(pair[0], module=_Step(w))
    value, verdict, details = _robust(PGD(eps=0.3, steps=10, samples=200), (model, pair[1]))
    assert value > 0.9 and details["warnings"] and "gradient masking" in details["warnings"][0]
    out = PGD(eps=0.3, steps=10, samples=200).run(context(model, pair[1]))
    m = out.metrics["robust_accuracy"]
    assert m.bound == "upper" and out.metrics["attack_success_rate"].bound == "lower"
    assert verdict is Verdict.INDETERMINATE
    assert judge(m.value, m.ci, ">=", 0.5, bound=m.bound, bound_reason=m.bound_reason)[1] == m.bound_reason
    apgd_value = _robust(APGD(eps=0.3, steps=10, samples=200), (model, pair[1]))[0]
    assert apgd_value < value - 0.2


def test_judge_honours_bounds():
    ci = (0.8, 0.9)
    assert judge(0.85, ci, ">=", 0.7, bound="upper", bound_reason="masked") == (Verdict.INDETERMINATE, "masked")
    assert judge(0.5, (0.45, 0.55), ">=", 0.7, bound="upper")[0] is Verdict.FAIL  # an upper bound below min fails
    assert judge(0.05, (0.01, 0.1), "<=", 0.2, bound="lower", bound_reason="masked")[0] is Verdict.INDETERMINATE
    assert judge(0.5, (0.45, 0.55), "<=", 0.2, bound="lower")[0] is Verdict.FAIL
    assert judge(0.5, (0.45, 0.55), "<=", 0.2, bound="upper")[0] is Verdict.INDETERMINATE
    assert judge(0.85, ci, ">=", 0.7)[0] is Verdict.PASS
    with pytest.raises(ValueError):
        judge(0.85, ci, ">=", 0.7, bound="sideways")


@pytest.fixture(scope="module")
def two_units(tmp_path_factory):
    """The same classifier on features x and on 100 * x (first layer divided by 100)."""
    import copy

    import torch

    rng = np.random.default_rng(7)
    x = rng.normal(size=(1200, 6)).astype(np.float32)
    y = (x[:, 0] + 0.8 * x[:, 1] - 0.5 * x[:, 2] > 0).astype(np.int64)
    net = _fit(x, y, 2)
    wide = copy.deepcopy(net)
    with torch.no_grad():
        wide[0].weight.div_(100.0)
    base = tmp_path_factory.mktemp("units")
    return _write(base / "x", x, y, {"m": net})["m"], _write(base / "x100", x * 100, y, {"m": wide})["m"]


def test_units_never_give_opposite_verdicts_silently(two_units):
    small, large = two_units
    params = {"eps": 0.2, "steps": 20, "samples": 250}
    v_small, verdict_small, d_small = _robust(PGD(**params), small)
    v_large, verdict_large, d_large = _robust(PGD(**params), large)
    # eps=0.2 harms the model in x's units and does nothing in 100x's; the latter is flagged, never a PASS
    assert v_small < v_large - 0.05
    assert verdict_large is not Verdict.PASS and any("median feature range" in w for w in d_large["warnings"])
    assert d_large["budget_relative_to_range"]["median"] == pytest.approx(d_small["budget_relative_to_range"]["median"] / 100, rel=1e-3)
    # stated relative to the data, the budget means the same on both: the same robust accuracy and verdict
    for scale in ("range", "std"):
        a = _robust(PGD(**params, scale=scale), small)
        b = _robust(PGD(**params, scale=scale), large)
        assert abs(a[0] - b[0]) <= 0.01 and a[1] == b[1], (scale, a[:2], b[:2])
        assert a[2]["scale"] == scale and not a[2]["warnings"]
    rel = _robust(APGD(eps=0.01, steps=10, samples=250, scale="range"), large)
    assert rel[2]["budget_relative_to_range"]["median"] == pytest.approx(0.01)


def test_ranges_far_apart_are_a_warning(tmp_path):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 3)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int64)
    x[:, 2] *= 1000
    model, data = _write(tmp_path, x, y, {"m": _fit(x, y, 2)})["m"]
    out = PGD(eps=0.5, steps=5, samples=100).run(context(model, data))
    assert any("differ by" in w for w in out.details["warnings"])
    assert out.metrics["robust_accuracy"].bound == "upper"


def test_scale_is_validated():
    from amulet_audit.core.params import ParameterError

    with pytest.raises(ParameterError, match="scale"):
        PGD(eps=0.1, scale="metres").validated_params()
    with pytest.raises(ParameterError, match="loss"):
        PGD(eps=0.1, loss="hinge").validated_params()


class _ScriptableStep:
    """Built lazily so that torch is imported inside the test: a TorchScript-able model whose logits are a step
    function of a linear score (zero gradient everywhere: gradient masking by quantisation)."""

    @staticmethod
    def build():
        import torch

        class QuantisedLinear(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.register_buffer("w", torch.tensor([1.0, 0.8, -0.5, 0.0, 0.0, 0.0]))

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                z = torch.round(x @ self.w * 4) / 4
                return torch.stack([-z, z], 1)

        return QuantisedLinear().eval()


def test_audit_of_a_masked_model_is_indeterminate_with_the_check_sentence(tmp_path):
    """End to end: the runner passes the Measurement's bound to `judge`; the requirement PGD would PASS is
    INDETERMINATE with the gradient-masking sentence, and the audit exits 1."""
    import json
    import subprocess

    import torch

    from conftest import AMULET

    rng = np.random.default_rng(2)
    x = rng.normal(size=(600, 6)).astype(np.float32)
    y = (x @ np.array([1.0, 0.8, -0.5, 0, 0, 0], dtype=np.float32) > 0).astype(np.int64)
    _write(tmp_path, x, y, {"m": torch.jit.script(_ScriptableStep.build())})
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump({
        "policy": "masked", "title": "masked", "requirements": [
            {"id": "robust", "risk": "evasion", "attack": {"name": "pgd", "params": {"eps": 0.3, "steps": 5, "samples": 150}},
             "metric": "robust_accuracy", "threshold": {"min": 0.6}}]}))
    proc = subprocess.run([*AMULET, str(tmp_path / "m.pt"), "--policy", str(tmp_path / "policy.yaml"), "--out",
                           str(tmp_path / "out"), "--profile", "quick", "--no-pdf"], capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr[-2000:]
    row = json.loads((tmp_path / "out" / "results.json").read_text())["requirements"][0]
    assert row["value"] > 0.6 and row["ci"][0] > 0.6  # the unbounded reading would PASS
    assert row["verdict"] == "indeterminate" and "gradient masking" in row["reason"]


@pytest.fixture(scope="module")
def case13(tmp_path_factory):
    """Case 13's recipe: a 6-64-64-2 MLP on a linear rule over six normal features (seed 13), and the same network
    with its last layer multiplied by 40."""
    import torch

    rng = np.random.default_rng(13)
    x = rng.normal(size=(2000, 6)).astype(np.float32)
    y = (x[:, 0] + 0.8 * x[:, 1] - 0.5 * x[:, 2] > 0).astype(np.int64)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                              torch.nn.Linear(64, 2))
    opt = torch.optim.Adam(net.parameters(), lr=0.003)
    xt, yt = torch.tensor(x[:1000]), torch.tensor(y[:1000])
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()
    net.eval()
    return _write(tmp_path_factory.mktemp("case13"), x, y, {"unscaled": net, "confident": _confident(net)})


@pytest.mark.parametrize("cls", [PGD, APGD], ids=lambda c: c.name)
def test_case_13_confident_model_fails_like_its_unscaled_twin(cls, case13):
    """Case 13 (saturated logits): PGD and APGD at eps 0.3 give 0.608 and FAIL (min 0.7) for both models; before,
    the confident model's vanishing cross-entropy gradient gave 0.882 (PGD) and 0.830 (APGD) and a PASS."""
    for name in ("unscaled", "confident"):
        model, data = case13[name]
        m = cls(eps=0.3, steps=20).run(context(model, data)).metrics["robust_accuracy"]
        verdict, _ = judge(m.value, m.ci, ">=", 0.7, m.reason, bound=m.bound, bound_reason=m.bound_reason)
        assert m.value == pytest.approx(0.608, abs=0.01) and verdict is Verdict.FAIL, (name, m.value, verdict)
