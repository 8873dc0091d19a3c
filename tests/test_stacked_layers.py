"""K reference models with BatchNorm, Dropout and convolutions trained at once: equal weights where nothing is random
(BatchNorm), equal in distribution where draws are (Dropout), for eager and TorchScript models."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest

from amulet_audit.inputs.data import TrainingRecipe
from amulet_audit.inputs.model import ModelHandle
from amulet_audit.training.loop import train_model
from amulet_audit.training.reference import half_masks, train_reference_models

LAYERS = "batched layer"  # the kernel for Sequentials of torch.nn layers
RECIPES = {
    "adam": TrainingRecipe(epochs=3, batch_size=16, optimizer="adam", lr=0.01, weight_decay=0.01),
    "sgd": TrainingRecipe(epochs=3, batch_size=16, optimizer="sgd", lr=0.05, momentum=0.9),
}


def _data(n: int = 90, d: int = 8, seed: int = 0, classes: int = 3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    y = ((x[:, 0] + 0.5 * x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)) % classes
    return x, y


def _handle(module) -> ModelHandle:
    return ModelHandle(Path("model"), "0" * 64, "state_dict", module, "test model")


def _scripted(module, trace_with=None) -> ModelHandle:
    import torch

    from amulet_audit.inputs.model import load_model

    buf = io.BytesIO()
    torch.jit.save(torch.jit.trace(module.eval(), trace_with) if trace_with is not None else torch.jit.script(module), buf)
    with tempfile.TemporaryDirectory() as folder:  # loaded as the audit loads it: traced layers are recorded
        path = Path(folder) / "model.pt"
        path.write_bytes(buf.getvalue())
        return load_model(path)


def _bn_mlp():
    import torch.nn as nn

    # no bias before a BatchNorm (the usual design): the normalisation removes it, so its gradient is zero in exact
    # arithmetic and Adam would turn the rounding noise into steps of size lr, different in any two trainers
    return nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))


def _bn_cnn():
    import torch.nn as nn

    return nn.Sequential(nn.Unflatten(1, (2, 2, 2)), nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4, 3))


class _CustomBN:
    """A module that is no Sequential (a skip around the BatchNorm): only torch.func.vmap runs it."""

    def __new__(cls):
        import torch
        import torch.nn as nn

        class CustomBN(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.bn, self.b = nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.Linear(16, 3)

            def forward(self, x):
                h = self.a(x)
                return self.b(torch.relu(self.bn(h)) + 0.1 * h)

        return CustomBN()


class _ResidualDropout:
    """A module with Dropout that is no Sequential (a skip connection): trained through vmap."""

    def __new__(cls):
        import torch
        import torch.nn as nn

        class ResidualDropout(nn.Module):
            def __init__(self):
                super().__init__()
                self.a, self.drop, self.b = nn.Linear(8, 16), nn.Dropout(0.5), nn.Linear(16, 3)

            def forward(self, x):
                h = torch.relu(self.a(x))
                return self.b(self.drop(h) + h)

        torch.manual_seed(0)
        return ResidualDropout()


def _one_at_a_time(handle, x, y, masks, recipe, seed):
    out = []
    for k in range(len(masks)):
        module = handle.fresh_copy(seed + k)
        train_model(module, x[masks[k]], y[masks[k]], recipe, seed=seed + k)
        out.append(module)
    return out


def _uneven_masks(n: int) -> np.ndarray:
    masks = half_masks(n, 4, seed=0)
    masks[1, :12] = True  # 52, 45 and 18 records: end-of-epoch batches of 4, 13 and 2 rows next to full ones
    masks[3, 40:] = False
    assert all(int(m.sum()) % 16 != 1 for m in masks)  # a batch of one row is refused by BatchNorm in training
    return masks


@pytest.mark.parametrize("recipe", list(RECIPES), ids=list(RECIPES))
@pytest.mark.parametrize("arch", ["bn-mlp", "bn-cnn", "scripted-bn-cnn", "custom-bn"])
def test_batchnorm_models_train_to_the_weights_and_buffers_of_one_at_a_time_training(arch, recipe):
    import torch

    torch.manual_seed(0)
    module = {"bn-mlp": _bn_mlp, "bn-cnn": _bn_cnn, "scripted-bn-cnn": _bn_cnn, "custom-bn": _CustomBN}[arch]()
    handle = _scripted(module) if arch.startswith("scripted") else _handle(module)
    x, y = _data()
    masks, recipe = _uneven_masks(len(x)), RECIPES[recipe]
    refs = train_reference_models(handle, x, y, masks, recipe, seed=5)
    assert refs.details["trainer"] == "vectorised", refs.details["reason"]
    assert refs.details["kernel"].startswith("torch.func.vmap" if arch == "custom-bn" else LAYERS)
    expected = _one_at_a_time(handle, x, y, masks, recipe, seed=5)
    for k, module in enumerate(expected):
        got = refs.state_dict(k)
        for name, tensor in module.state_dict().items():  # parameters, running means and variances, batch counts
            np.testing.assert_allclose(got[name].numpy(), tensor.numpy(), atol=2e-5, rtol=0, err_msg=f"{name} of {k}")
        with torch.no_grad():
            np.testing.assert_allclose(refs.logits(x)[k], module(torch.as_tensor(x)).double().numpy(), atol=1e-4)
    assert int(refs.state_dict(3)[next(n for n in refs.state_dict(3) if n.endswith("num_batches_tracked"))]) == 3 * 2


def test_the_digits_cnn_saved_as_torchscript_trains_at_once_with_the_weights_of_one_at_a_time_training():
    import importlib.util

    import torch

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("digits_example_stacked", root / "examples" / "digits" / "train.py")
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    images, labels = digits.load_images()
    x, y = images[:120], labels[:120]
    torch.manual_seed(0)
    handle = _scripted(digits.build_model())
    recipe = digits.RECIPE.model_copy(update={"epochs": 2})
    masks = half_masks(len(x), 2, seed=0)
    refs = train_reference_models(handle, x, y, masks, recipe, seed=1)
    assert refs.details["kernel"].startswith(LAYERS)
    for k, module in enumerate(_one_at_a_time(handle, x, y, masks, recipe, seed=1)):
        for name, tensor in module.state_dict().items():
            np.testing.assert_allclose(refs.state_dict(k)[name].numpy(), tensor.numpy(), atol=1e-5, rtol=0)


def test_dropout_draws_are_independent_per_model_and_reproducible():
    import torch
    import torch.nn as nn

    from amulet_audit.training.stacked import sequential_layers

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))
    layers = sequential_layers(net, [n for n, _ in net.named_parameters()])
    assert layers is not None and layers.random
    state = {n: torch.stack([t.detach()] * 2) for n, t in net.state_dict().items()}
    x = torch.randn(1, 50, 8).expand(2, 50, 8)  # two identical models on identical inputs
    out = layers.forward(state, x, training=True, gen=torch.Generator().manual_seed(0))
    assert not torch.allclose(out[0], out[1])  # each model its own mask
    again = layers.forward(state, x, training=True, gen=torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    eval_out = layers.forward(state, x, training=False)
    torch.testing.assert_close(eval_out[0], net.eval()(x[0]))
    # the whole trainer: the same seed gives the same models
    data, labels = _data()
    handle = _handle(net)
    first = train_reference_models(handle, data, labels, half_masks(90, 2, 0), RECIPES["adam"], seed=3)
    second = train_reference_models(handle, data, labels, half_masks(90, 2, 0), RECIPES["adam"], seed=3)
    assert first.details["kernel"].startswith(LAYERS)
    np.testing.assert_array_equal(first.logits(data), second.logits(data))
    # a module that is no Sequential: vmap draws per model from torch's generator, seeded the same way
    residual = _ResidualDropout()
    runs = [train_reference_models(_handle(residual), data, labels, half_masks(90, 2, 0), RECIPES["adam"], seed=3)
            for _ in range(2)]
    assert runs[0].details["kernel"].startswith("torch.func.vmap")
    np.testing.assert_array_equal(runs[0].logits(data), runs[1].logits(data))
    residual.drop.p = 0.0
    plain = train_reference_models(_handle(residual), data, labels, half_masks(90, 2, 0), RECIPES["adam"], seed=3)
    assert np.abs(plain.logits(data) - runs[0].logits(data)).max() > 1e-3  # the Dropout did draw
    residual.drop.p = 0.5
    with torch.random.fork_rng():
        torch.manual_seed(123)
        other = train_reference_models(_handle(residual), data, labels, half_masks(90, 2, 0), RECIPES["adam"], seed=3)
    np.testing.assert_array_equal(other.logits(data), runs[0].logits(data))  # whatever the global generator's state


def _auc_interval(scores: np.ndarray, member: np.ndarray, reps: int = 300, seed: int = 0) -> tuple[float, float, float]:
    """ROC AUC of `scores` for `member`, with a 95% percentile bootstrap interval over members and non-members."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    i_in, i_out = np.flatnonzero(member), np.flatnonzero(~member)
    boots = [roc_auc_score(np.r_[np.ones(len(i_in)), np.zeros(len(i_out))],
                           np.r_[scores[rng.choice(i_in, len(i_in))], scores[rng.choice(i_out, len(i_out))]])
             for _ in range(reps)]
    return float(roc_auc_score(member, scores)), float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))


def _accuracy_interval(correct: int, n: int) -> tuple[float, float, float]:
    """Accuracy with its exact (Clopper-Pearson) 95% interval."""
    from scipy.stats import beta

    low = beta.ppf(0.025, correct, n - correct + 1) if correct > 0 else 0.0
    high = beta.ppf(0.975, correct + 1, n - correct) if correct < n else 1.0
    return correct / n, float(low), float(high)


def test_a_dropout_set_gives_the_same_models_whichever_set_was_cached_first(tmp_path):
    """LiRA's 8 reference models and RMIA's 2 share seeds and masks; with Dropout, models trained together draw
    from their set's generator, so each set is cached as a set: the 2 models are the same whether the 8 were
    trained before them or not (the audit's numbers must not depend on which job ran first)."""
    import torch
    import torch.nn as nn

    from amulet_audit.training.cache import ModelCache

    torch.manual_seed(0)
    handle = _handle(nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3)))
    data, labels = _data()

    def two(cache):
        return train_reference_models(handle, data, labels, half_masks(90, 2, 0), RECIPES["adam"], seed=3,
                                      cache=cache).logits(data)

    alone = two(ModelCache(tmp_path / "alone"))
    after = ModelCache(tmp_path / "after")
    train_reference_models(handle, data, labels, half_masks(90, 8, 0), RECIPES["adam"], seed=3, cache=after)
    np.testing.assert_array_equal(two(after), alone)


def test_dropout_models_trained_at_once_match_one_at_a_time_training_in_accuracy_and_lira_auc():
    """Dropout masks cannot be those of one-at-a-time training, so the two trainers are compared in distribution:
    over three seeds, the reference models' test accuracy and the LiRA AUC they give against an overfitted target
    agree within their 95% intervals (LiRA: Carlini et al., S&P 2022)."""
    import torch
    import torch.nn as nn

    from amulet_audit.risks.membership import lira_scores, logit_confidence

    x_all, y_all = _data(n=1000, d=8, seed=11)
    flip = np.random.default_rng(11).random(len(y_all)) < 0.2  # label noise: memorised by members' models
    y_all = np.where(flip, (y_all + 1) % 3, y_all)
    x, y, x_test, y_test = x_all[:300], y_all[:300], x_all[300:], y_all[300:]
    member = np.zeros(len(x), bool)
    member[:150] = True
    recipe = TrainingRecipe(epochs=25, batch_size=32, optimizer="adam", lr=0.01)
    k = 8
    for seed in range(3):
        torch.manual_seed(seed)
        net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 64), nn.ReLU(),
                            nn.Dropout(0.5), nn.Linear(64, 3))
        handle = _handle(net)
        target = handle.fresh_copy(100 + seed)
        train_model(target, x[member], y[member], recipe, seed=100 + seed)
        with torch.no_grad():
            target_conf = logit_confidence(target(torch.as_tensor(x)).double().numpy(), y)
        masks = half_masks(len(x), k, seed)
        stacked = train_reference_models(handle, x, y, masks, recipe, seed=seed)
        assert stacked.details["kernel"].startswith(LAYERS)
        one_by_one = _one_at_a_time(handle, x, y, masks, recipe, seed)
        with torch.no_grad():
            sequential_logits = np.stack([m(torch.as_tensor(x_all)).double().numpy() for m in one_by_one])
        results = {}
        for name, logits in (("stacked", stacked.logits(x_all)), ("one at a time", sequential_logits)):
            correct = int((logits[:, 300:].argmax(-1) == y_test).sum())
            scores = lira_scores(target_conf, logit_confidence(logits[:, :300], y), masks, online=True, variance="global")
            results[name] = (_accuracy_interval(correct, k * len(y_test)), _auc_interval(scores, member, seed=seed))
        (acc_a, auc_a), (acc_b, auc_b) = results.values()
        for a, b in ((acc_a, acc_b), (auc_a, auc_b)):
            assert a[1] <= b[0] <= a[2] and b[1] <= a[0] <= b[2], (seed, results)
        assert acc_a[0] > 0.5 and auc_a[0] > 0.55, results  # the models learned, and membership leaks


def test_what_cannot_be_stacked_trains_one_at_a_time_and_says_why():
    import torch
    import torch.nn as nn

    from amulet_audit.training.scripted import eager_sequential

    x, y = _data()
    # a scripted module that is no Sequential, with a BatchNorm the FX conversion cannot train
    torch.manual_seed(0)
    scripted = _scripted(_CustomBN())
    assert eager_sequential(scripted, 0, torch.as_tensor(x[:8])) is None
    refs = train_reference_models(scripted, x, y, half_masks(len(x), 2, 0), TrainingRecipe(epochs=1), seed=0)
    assert refs.details["trainer"] == "sequential" and "TorchScript" in refs.details["reason"]
    # a traced Sequential: its BatchNorm is frozen in eval mode, so a rebuilt (trainable) one would differ; its
    # functional copy (the frozen graph) trains as the traced copies do
    torch.manual_seed(0)
    traced = _scripted(_bn_mlp(), trace_with=torch.as_tensor(x[:4]))
    assert traced.fixed_mode_layers and eager_sequential(traced, 0, torch.as_tensor(x[:8])) is None
    masks = half_masks(len(x), 2, 0)
    refs = train_reference_models(traced, x, y, masks, RECIPES["adam"], seed=0)
    assert refs.details["trainer"] == "vectorised"
    for k, module in enumerate(_one_at_a_time(traced, x, y, masks, RECIPES["adam"], seed=0)):
        with torch.no_grad():
            np.testing.assert_allclose(refs.logits(x)[k], module(torch.as_tensor(x)).double().numpy(), atol=1e-4)
    # a BatchNorm with a cumulative average (momentum None): its factor is read from a per-model count
    net = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16, momentum=None), nn.ReLU(), nn.Linear(16, 3))
    refs = train_reference_models(_handle(net), x, y, half_masks(len(x), 2, 0), TrainingRecipe(epochs=1), seed=0)
    assert refs.details["trainer"] == "sequential" and "vectorised forward failed" in refs.details["reason"]
