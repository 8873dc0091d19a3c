"""The reference-model trainer: vectorised training equals one-at-a-time training, fallbacks say why, cache reuse."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from amulet_audit.inputs.data import TrainingRecipe
from amulet_audit.inputs.model import ModelHandle
from amulet_audit.training.loop import train_model
from amulet_audit.training.reference import half_masks, train_reference_models


def _data(n: int = 90, d: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = ((x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64))  # 3 classes
    return x, y


def _mlp(d: int = 5, hidden: int = 16, classes: int = 3, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, classes))


def _residual(d: int = 5, hidden: int = 16, classes: int = 3, seed: int = 0):
    import torch

    class Residual(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp, self.mid, self.out = (torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, hidden),
                                            torch.nn.Linear(hidden, classes))

        def forward(self, x):
            h = torch.tanh(self.inp(x))
            return self.out(h + torch.relu(self.mid(h)))

    torch.manual_seed(seed)
    return Residual()


def _handle(module, fmt: str = "state_dict") -> ModelHandle:
    return ModelHandle(Path("model"), "0" * 64, fmt, module, "test MLP")


def _scripted_handle(module) -> ModelHandle:
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(module), buf)
    raw = buf.getvalue()
    loaded = torch.jit.load(io.BytesIO(raw)).eval()
    return ModelHandle(Path("model.pt"), "0" * 64, "torchscript", loaded, "RecursiveScriptModule", [], raw)


def _one_at_a_time(handle, x, y, masks, recipe, seed):
    out = []
    for k in range(len(masks)):
        module = handle.fresh_copy(seed + k)
        train_model(module, x[masks[k]], y[masks[k]], recipe, seed=seed + k)
        out.append(module.state_dict())
    return out


def _assert_same_weights(refs, expected: list[dict]) -> None:
    """Reference model k has the weights of the k-th one-at-a-time state dict, to 1e-5."""
    for k, state in enumerate(expected):
        got = refs.state_dict(k)
        for name, tensor in state.items():
            np.testing.assert_allclose(got[name].numpy(), tensor.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("recipe", [
    TrainingRecipe(epochs=4, batch_size=16, optimizer="adam", lr=0.01, weight_decay=0.01),
    TrainingRecipe(epochs=4, batch_size=16, optimizer="adamw", lr=0.01, weight_decay=0.05),
    TrainingRecipe(epochs=4, batch_size=16, optimizer="sgd", lr=0.05, weight_decay=0.01, momentum=0.9),
    TrainingRecipe(epochs=3, batch_size=7, optimizer="sgd", lr=0.1),
], ids=["adam", "adamw", "sgd-momentum", "sgd-plain"])
@pytest.mark.parametrize("arch", ["chain", "vmap"])
def test_vectorised_trainer_gives_the_weights_of_one_at_a_time_training(recipe, arch):
    x, y = _data()
    # an MLP trains through the hand-written chain gradient; a residual block through vmap and autograd
    handle = _handle(_mlp() if arch == "chain" else _residual())
    masks = half_masks(len(x), 4, seed=0)
    masks[1, :9] = True  # unequal subset sizes: padded batches and skipped steps must not change the math
    masks[3, 40:] = False
    refs = train_reference_models(handle, x, y, masks, recipe, seed=5)
    assert refs.details["trainer"] == "vectorised" and refs.details["reason"] == ""
    assert refs.details["kernel"].startswith("batched" if arch == "chain" else "torch.func.vmap")
    _assert_same_weights(refs, _one_at_a_time(handle, x, y, masks, recipe, seed=5))
    # and the models did train: weights moved away from their initialisation
    init = handle.fresh_copy(5).state_dict()
    assert max(float((refs.state_dict(0)[n] - init[n]).abs().max()) for n in init) > 1e-2


def test_reference_logits_are_every_models_outputs():
    import torch

    x, y = _data()
    handle = _handle(_mlp())
    masks = half_masks(len(x), 4, seed=1)
    recipe = TrainingRecipe(epochs=2, batch_size=32)
    refs = train_reference_models(handle, x, y, masks, recipe, seed=0)
    z = refs.logits(x[:11])
    assert z.shape == (4, 11, 3) and z.dtype == np.float64
    module = _mlp()
    module.load_state_dict(refs.state_dict(2))
    with torch.no_grad():
        np.testing.assert_allclose(z[2], module(torch.as_tensor(x[:11])).double().numpy(), atol=1e-5)


@pytest.mark.parametrize("arch", ["sequential", "residual"])
def test_torchscript_is_vectorised_and_matches_one_at_a_time(arch):
    """A scripted Sequential is rebuilt in eager mode (its chain kernel); another scripted module trains through
    its functional copy, an FX graph (vmap)."""
    x, y = _data()
    handle = _scripted_handle(_mlp() if arch == "sequential" else _residual())
    masks = half_masks(len(x), 2, seed=0)
    recipe = TrainingRecipe(epochs=2, batch_size=16)
    refs = train_reference_models(handle, x, y, masks, recipe, seed=3)
    assert refs.details["trainer"] == "vectorised"
    assert refs.details["kernel"].startswith("batched matrix" if arch == "sequential" else "torch.func.vmap")
    _assert_same_weights(refs, _one_at_a_time(handle, x, y, masks, recipe, seed=3))
    assert refs.logits(x[:5]).shape == (2, 5, 3)


def test_chain_gradient_equals_autograd_for_every_supported_layer():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    from amulet_audit.training.stacked import linear_chain

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Sequential(nn.Linear(9, 7), nn.LeakyReLU(0.1)),
                        nn.Linear(7, 6, bias=False), nn.Sigmoid(), nn.Identity(), nn.Linear(6, 5), nn.ReLU(),
                        nn.Linear(5, 4))
    names = [n for n, _ in net.named_parameters()]
    chain = linear_chain(net, names)
    assert chain is not None
    k, n = 3, 10
    params = {name: torch.stack([p.detach() + 0.1 * i for i in range(k)]) for name, p in net.named_parameters()}
    x, y = torch.randn(k, n, 3, 4), torch.randint(0, 4, (k, n))
    scale = torch.rand(k, n)
    grads = {name: torch.empty_like(t) for name, t in params.items()}
    chain.gradient(params, grads, x, y, scale)
    for i in range(k):
        copy = nn.Sequential(*net.children())
        with torch.no_grad():
            for name, p in copy.named_parameters():
                p.copy_(params[name][i])
        loss = (F.cross_entropy(copy(x[i]), y[i], reduction="none") * scale[i]).sum()
        loss.backward()
        for name, p in copy.named_parameters():
            torch.testing.assert_close(grads[name][i], p.grad, atol=1e-5, rtol=1e-4)
        copy.zero_grad()
    # anything else is left to vmap: a LayerNorm, a Flatten that keeps trailing dimensions, a custom module
    assert linear_chain(nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)),
                        ["0.weight", "0.bias", "1.weight", "1.bias", "2.weight", "2.bias"]) is None
    assert linear_chain(nn.Sequential(nn.Flatten(1, 2), nn.Linear(4, 2)), ["1.weight", "1.bias"]) is None
    assert linear_chain(_residual(), [n for n, _ in _residual().named_parameters()]) is None


def test_a_chain_the_batched_kernel_cannot_run_trains_through_the_layer_kernel():
    """A Linear applied to each position of a 3-D input, then flattened: a Linear/activation chain whose batched
    matrix products would need 4-D operands, so the trainer checks it and runs it layer by layer instead."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.Linear(15, 3))
    x, y = _data(d=12)
    x = x.reshape(-1, 3, 4)
    handle = _handle(net)
    masks = half_masks(len(x), 2, 0)
    recipe = TrainingRecipe(epochs=2, batch_size=16)
    refs = train_reference_models(handle, x, y, masks, recipe, seed=1)
    assert refs.details["trainer"] == "vectorised" and refs.details["kernel"].startswith("batched layer")
    _assert_same_weights(refs, _one_at_a_time(handle, x, y, masks, recipe, seed=1))


def test_trained_sets_are_cached_by_content_and_reused(tmp_path):
    from amulet_audit.training.cache import ModelCache

    x, y = _data()
    recipe = TrainingRecipe(epochs=2, batch_size=16)
    cache = ModelCache(tmp_path)
    first = train_reference_models(_handle(_mlp(seed=0)), x, y, half_masks(len(x), 4, 0), recipe, seed=0, cache=cache)
    assert first.details["from_cache"] == 0
    # another model of the same architecture (other trained weights): the same reference models
    other = _handle(_mlp(seed=9))
    assert other.architecture_digest() == _handle(_mlp(seed=0)).architecture_digest()
    again = train_reference_models(other, x, y, half_masks(len(x), 4, 0), recipe, seed=0, cache=cache)
    assert again.details["from_cache"] == 4
    np.testing.assert_array_equal(again.logits(x), first.logits(x))
    # a smaller set drawn the same way is the larger set's first pair: loaded, not trained
    pair = train_reference_models(other, x, y, half_masks(len(x), 2, 0), recipe, seed=0, cache=cache)
    assert pair.details["from_cache"] == 2
    # anything that changes the weights changes the key
    changed = train_reference_models(other, x, y, half_masks(len(x), 2, 0), recipe.model_copy(update={"lr": 0.01}),
                                     seed=0, cache=cache)
    assert changed.details["from_cache"] == 0
    assert _handle(_mlp(hidden=17)).architecture_digest() != other.architecture_digest()


def test_half_masks_are_complementary_pairs():
    masks = half_masks(101, 6, seed=4)
    assert masks.shape == (6, 101)
    assert (masks[0] ^ masks[1]).all() and (masks[2] ^ masks[3]).all()
    assert set(masks.sum(axis=0)) == {3}  # every record IN for exactly half the models
    assert not np.array_equal(masks[0], masks[2])
    np.testing.assert_array_equal(half_masks(101, 2, seed=4), masks[:2])
    odd = half_masks(10, 3, seed=0)
    assert set(odd.sum(axis=0)) == {1, 2} and odd[2].sum() == 5  # the unpaired model trains on a half too
