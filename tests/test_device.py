"""--device: choosing where models compute, and keeping every tensor a trainer makes where the weights are.

No GPU is needed for the discipline tests: torch's meta device (tensors with a shape and a device but no data)
refuses every operation that mixes it with CPU tensors, as CUDA does, so a trainer run with the audit's device set
to meta shows that each tensor it makes on the way (batches, optimizer state, Dropout masks, per-example gradients)
sits where the weights are. Such a run ends where the trained weights are first copied back (meta holds no data to
copy): the tests check that this is where it ends. The tests marked `gpu` compare a CUDA run with a CPU run and run
only where torch sees a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import traceback

import numpy as np
import pytest
import torch

from amulet_audit.core import device
from amulet_audit.core.errors import InputError

from conftest import AMULET, ONE_DEFENSE

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU here")


def test_choices_resolve_and_a_missing_gpu_is_refused_with_the_fix(monkeypatch):
    assert device.resolve("cpu") == "cpu" and device.resolve(" CPU ") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device.resolve("auto") == "cpu"
    for choice in ("cuda", "cuda:1"):
        with pytest.raises(InputError, match=rf"--device {choice}: .*use --device cpu, or auto"):
            device.resolve(choice)
    for choice in ("cuda:x", "cuda:", "cuda:00", "cuda:１"):
        with pytest.raises(InputError, match=f"--device {choice}: write a GPU as cuda or cuda:N"):
            device.resolve(choice)
    with pytest.raises(InputError, match="--device meta: not a device; use one of auto, cpu, cuda"):
        device.resolve("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert device.resolve("auto") == "cuda" and device.resolve("cuda:0") == "cuda:0"
    with pytest.raises(InputError, match="this machine has 1 CUDA GPU"):
        device.resolve("cuda:1")


def test_placed_module_moves_inputs_and_outputs_and_keeps_gradients_and_mode():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 2))
    assert device.placed(module) is module  # on the CPU the module itself, nothing wrapped
    wrapped = device._placed_class()(module, "cpu")
    assert device.placed(wrapped) is wrapped and device.unplaced(wrapped) is module
    x = torch.randn(5, 3, requires_grad=True)
    wrapped.eval()
    assert not module.training
    out = wrapped(x)
    torch.testing.assert_close(out, module(x))
    (g,) = torch.autograd.grad(out.sum(), x)
    (want,) = torch.autograd.grad(module(x).sum(), x)
    torch.testing.assert_close(g, want)


@pytest.fixture
def on_meta(monkeypatch):
    """The audit's device set to meta for one test. Meta has no generator (a library's draws on the device come
    from a CPU generator here) and no data to copy back through a placed module's output: the copy back yields
    zeros on the caller's device, and gradients flowing back through it zeros on the device, so that code which
    calls a placed module (adversarial examples for a batch) runs on."""
    def move(t, target):  # what `t.to(target)` is, with zeros for data meta does not hold
        return torch.zeros(t.shape, dtype=t.dtype, device=target) if t.device.type == "meta" != target.type else t.to(target)

    class Move(torch.autograd.Function):
        @staticmethod
        def forward(ctx, t, target):
            ctx.source = t.device
            return move(t, target)

        @staticmethod
        def backward(ctx, grad):
            return move(grad, ctx.source), None

    placed = device._placed_class()

    def forward(self, x, *rest):
        return Move.apply(self.inner(Move.apply(x, torch.device(self.device))), x.device)

    monkeypatch.setattr(placed, "forward", forward)
    monkeypatch.setattr(device, "generator", lambda seed: torch.Generator().manual_seed(seed))
    device.use("meta")
    yield
    device.use("cpu")


def ends_copying_back(exc: BaseException, *where: str) -> bool:
    """Whether the meta run `exc` ended is where the trained weights are first copied back (a frame whose line
    contains one of `where`), not at a tensor on the wrong device."""
    lines = [frame.line or "" for frame in traceback.extract_tb(exc.__traceback__)]
    return "meta" in str(exc) and "expected device" not in str(exc) and any(w in line for w in where for line in lines)


def mlp(dropout: float = 0.0, batchnorm: bool = False):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(6, 8)] + ([torch.nn.BatchNorm1d(8)] if batchnorm else []) + [torch.nn.ReLU()]
    return torch.nn.Sequential(*layers, *([torch.nn.Dropout(dropout)] if dropout else []), torch.nn.Linear(8, 2))


def small_cnn():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 2, 3)), torch.nn.Conv2d(1, 4, 2, padding=1),
                               torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.Dropout(0.1), torch.nn.Flatten(),
                               torch.nn.Linear(48, 2))


def data(n: int = 160):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_the_training_loop_keeps_batches_where_the_weights_are(on_meta, optimizer):
    from amulet_audit.inputs.data import TrainingRecipe
    from amulet_audit.training.loop import train_loop

    x, y = data()
    recipe = TrainingRecipe(epochs=2, batch_size=32, lr=0.01, optimizer=optimizer, momentum=0.9)
    module = mlp(dropout=0.2, batchnorm=True)
    seen = []

    def transform(xb, yb, gen):  # a per-batch transform sees the batch on the CPU, as the attacks' code does
        seen.append(xb.device.type)
        return xb + 0.01 * torch.randn(xb.shape, generator=gen)

    trained = train_loop(module, x, y, recipe, seed=0, epochs=2, sample_weight=np.ones(len(x), np.float32),
                         transform=transform)
    assert {p.device.type for p in trained.parameters()} == {"meta"} and set(seen) == {"cpu"}


@pytest.mark.parametrize("architecture,kernel", [("mlp", "chain"), ("bn_dropout_mlp", "layers"),
                                                 ("bn_dropout_mlp", "vmap"), ("cnn", "layers"), ("cnn", "vmap")])
def test_reference_models_trained_together_keep_every_tensor_on_the_device(on_meta, architecture, kernel):
    from amulet_audit.inputs.data import TrainingRecipe
    from amulet_audit.training import reference
    from amulet_audit.training.stacked import linear_chain, sequential_layers

    base = {"mlp": mlp, "bn_dropout_mlp": lambda: mlp(0.2, True), "cnn": small_cnn}[architecture]()
    names = [n for n, _ in base.named_parameters()]
    state = {n: torch.stack([t.detach()] * 4).clone() for n, t in base.state_dict().items()}
    chain = linear_chain(base, names) if kernel == "chain" else None
    layers = sequential_layers(base, names) if kernel == "layers" else None
    assert (kernel != "chain" or chain is not None) and (kernel != "layers" or layers is not None)
    x, y = data()
    masks = reference.half_masks(len(x), 4, 0)
    masks[1, np.flatnonzero(masks[1])[:8]] = False  # last batches of 16 and 8 records: the grouped steps run too
    with pytest.raises(Exception) as raised:
        reference._train_vectorised(base, names, state, x, y, masks, TrainingRecipe(epochs=2, batch_size=32, lr=0.01),
                                    [0, 1, 2, 3], chain, layers=layers)
    assert ends_copying_back(raised.value, "trained[n].cpu()"), raised.value


@pytest.mark.parametrize("layer", ["dropout", "batchnorm"])
def test_dp_sgd_and_adversarial_training_keep_every_tensor_on_the_device(tabular_inputs, on_meta, layer):
    from amulet_audit.core import registry
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.core.defense import DefenseContext
    from amulet_audit.ops.scores import attach

    model, spec = tabular_inputs
    eager = mlp(dropout=0.1) if layer == "dropout" else mlp(batchnorm=True)
    device.use("cpu")
    handle = attach(dataclasses.replace(model, module=eager.eval(), format="pickle", architecture="Sequential",
                                        _source_bytes=None, raw=None), spec)
    device.use("meta")
    x, y = spec.x_train[:200], spec.y_train[:200]
    dp = {"epochs": 1, "replace_batchnorm": layer == "batchnorm"}  # DP-SGD trains a BatchNorm model with GroupNorm
    for name, params in (("dp_sgd", dp), ("adversarial_training", {"epochs": 1, "steps": 2})):
        ctx = DefenseContext(model=handle, data=spec, seed=0, profile=PROFILES["quick"])
        defended = None
        try:
            defended = registry.defense_class(name)(**params).fit(ctx, x, y, spec.spec.training, 0)
        except Exception as exc:  # DP-SGD loads the trained weights into a CPU copy: the first copy back
            assert name == "dp_sgd" and ends_copying_back(exc, "load_state_dict"), exc
        if defended is not None:
            assert {p.device.type for p in defended.parameters()} == {"meta"}


@gpu
def test_an_audit_on_the_gpu_gives_the_cpu_numbers(tmp_path, tabular):
    out = {}
    for name in ("cpu", "cuda"):
        done = subprocess.run([*AMULET, tabular, "--policy", ONE_DEFENSE, "--out", tmp_path / name, "--profile", "quick",
                               "--quiet", "--no-pdf", "--exit-zero", "--device", name], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        out[name] = json.loads((tmp_path / name / "results.json").read_text())
    assert out["cuda"]["environment"]["device"].startswith("cuda:0 (")
    for mine, theirs in zip(out["cpu"]["requirements"], out["cuda"]["requirements"]):
        assert mine["id"] == theirs["id"] and (mine["value"] is None) == (theirs["value"] is None)
        if mine["value"] is not None:  # a record whose prediction sits on a rounding edge may flip: 2% at most
            assert abs(mine["value"] - theirs["value"]) <= 0.02, (mine["id"], mine["value"], theirs["value"])


@gpu
@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_reference_models_trained_on_the_gpu_equal_the_cpu_ones(architecture):
    from amulet_audit.inputs.data import TrainingRecipe
    from amulet_audit.training import reference
    from amulet_audit.training.stacked import linear_chain, sequential_layers

    x, y = data(400)
    masks = reference.half_masks(len(x), 4, 0)
    trained = {}
    for name in ("cpu", "cuda"):
        base = mlp() if architecture == "mlp" else torch.nn.Sequential(*list(small_cnn())[:4], *list(small_cnn())[5:])
        names = [n for n, _ in base.named_parameters()]
        state = {n: torch.stack([t.detach()] * 4).clone() for n, t in base.state_dict().items()}
        chain = linear_chain(base, names)
        device.use(name)
        try:
            trained[name] = reference._train_vectorised(
                base, names, state, x, y, masks, TrainingRecipe(epochs=3, batch_size=32, lr=0.01), [0, 1, 2, 3], chain,
                layers=None if chain is not None else sequential_layers(base, names))
        finally:
            device.use("cpu")
    for n, t in trained["cpu"].items():
        torch.testing.assert_close(trained["cuda"][n], t, atol=5e-4, rtol=1e-3)


def test_every_attack_and_defense_reads_and_trains_models_through_the_device_wrapper(tmp_path, monkeypatch):
    """With the wrapper placed around the audited model and every copy (as on a GPU, here with the CPU as the
    device), the audit gives exactly the numbers it gives without it: no component reaches past the wrapper."""
    import yaml

    from amulet_audit.core.attack import PROFILES
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit

    from conftest import ROOT, make_tabular

    policy = yaml.safe_load((ROOT / "policies" / "eu_ai_act.yaml").read_text())
    keep = {"pgd", "lira", "model_inversion", "backdoor", "extraction", "attribute_inference"}
    policy["requirements"] = [r for r in policy["requirements"] if r.get("attack", {}).get("name") in keep
                              and r["metric"] not in ("clean_accuracy", "attack_success_rate")]
    policy["interactions"]["defenses"] = [{"name": "adversarial_training", "params": {"epochs": 2, "steps": 3}},
                                          {"name": "dp_sgd", "params": {"epochs": 2}}]
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    path = make_tabular(tmp_path / "model", n=1200, epochs=10)
    model, data = load_model(path), load_data(path.with_name("model.data.yaml"))
    loaded = load_policy(str(tmp_path / "policy.yaml"))

    def numbers(result):
        rows = [(r.id, r.value, r.ci, r.verdict) for r in result.requirements]
        rows += [(d.name, d.model_sha256, [(r.id, r.value, r.ci) for r in d.requirements]) for d in result.defenses]
        return rows + [(i.defense, i.requirement, i.delta, i.delta_ci) for i in result.interactions]

    plain = run_audit(model, data, loaded, seed=0, profile=PROFILES["quick"])
    wrapper = device._placed_class()
    calls = []
    monkeypatch.setattr(device, "on_cpu", lambda: False)  # wrap as on a GPU; the device stays "cpu"
    monkeypatch.setattr(wrapper, "__call__", lambda self, *a, **k: calls.append(1) or torch.nn.Module.__call__(self, *a, **k))
    wrapped = run_audit(load_model(path), data, loaded, seed=0, profile=PROFILES["quick"])
    assert calls and numbers(wrapped) == numbers(plain)
    assert all(r.value is not None for r in plain.requirements), [(r.id, r.reason) for r in plain.requirements]
