"""Each defense on a real small model: it does what it is for, and never touches the audited model."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from amulet_audit.core import registry
from amulet_audit.core.defense import DefenseContext
from amulet_audit.defenses.outlier_removal import OutlierRemoval
from amulet_audit.defenses.output import OutputPerturbation, Watermarking
from amulet_audit.core.attack import PROFILES
from amulet_audit.training.copies import train_copy


def _digest(module) -> str:
    return hashlib.sha256(b"".join(t.detach().numpy().tobytes() for t in module.state_dict().values())).hexdigest()


def ctx_for(model, data, seed=0):
    return DefenseContext(model=model, data=data, seed=seed, profile=PROFILES["quick"])


@pytest.mark.parametrize("name", ["outlier_removal", "output_perturbation", "watermarking", "dp_sgd", "adversarial_training"])
def test_defense_contract(name, tabular_inputs):
    """Defaults satisfy their constraints; the audited model is unchanged; same seed, same defended weights."""
    from amulet_audit.core.params import validate_params

    model, data = tabular_inputs
    cls = registry.defense_class(name)
    assert not validate_params(name, cls.parameter_constraints, dict(cls.defaults))
    assert set(cls.defaults) == set(cls.parameter_constraints)
    before = _digest(model.module)
    params = {"epochs": 2} if name in ("dp_sgd", "adversarial_training") else {}
    first = cls(**params).apply(ctx_for(model, data))
    second = cls(**params).apply(ctx_for(model, data))
    assert _digest(model.module) == before
    assert first.model.sha256 == second.model.sha256 != model.sha256


def test_outlier_removal_finds_flipped_labels(tabular_inputs):
    model, data = tabular_inputs
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(data.y_train), 75, replace=False)
    y = data.y_train.copy()
    y[flipped] = 1 - y[flipped]
    plain = train_copy(model, data.x_train, y, data.spec.training, seed=0)
    keep = OutlierRemoval(fraction=0.05).keep_mask(plain, data.x_train, y)
    removed = set(np.where(~keep)[0])
    caught = len(removed & set(flipped.tolist())) / len(flipped)
    assert caught > 0.3  # six times what dropping 5% at random would catch


def test_defended_model_trains_copies_through_the_defense(tabular_inputs, monkeypatch):
    """An attack that re-trains the defended model (poisoning) meets the defense: outlier removal drops records."""
    from amulet_audit.training import copies

    model, data = tabular_inputs
    defended = OutlierRemoval(fraction=0.2).apply(ctx_for(model, data)).model
    calls = []
    original = copies.train_model

    def spy(module, x, y, recipe, **kw):
        calls.append(len(x))
        return original(module, x, y, recipe, **kw)

    monkeypatch.setattr(copies, "train_model", spy)
    train_copy(defended, data.x_train[:500], data.y_train[:500], data.spec.training, seed=1)
    assert calls == [500, 400]  # a plain copy finds the outliers; the final copy trains on the 80% kept


def test_output_perturbation_reveals_only_labels(tabular_inputs):
    model, data = tabular_inputs
    out = OutputPerturbation(mode="labels").apply(ctx_for(model, data)).model.module
    probs = torch.softmax(out(torch.as_tensor(data.x_holdout[:50])), 1).detach().numpy()
    assert np.allclose(np.sort(probs, 1)[:, -1], 1.0, atol=1e-3)  # one-hot (up to the floor)


def test_watermark_is_embedded(tabular_inputs):
    model, data = tabular_inputs
    details = Watermarking().apply(ctx_for(model, data)).details
    assert details["trigger_accuracy"] > 0.9 > details["trigger_accuracy_of_audited_model"] + 0.2


def test_fairness_mitigation_narrows_the_parity_gap_and_retrains_copies_through_itself(tabular_inputs):
    """ExponentiatedGradient lowers the demographic-parity gap the biased proxy creates; a copy re-trained by an
    attack (poisoning) is mitigated too, with the sensitive attribute of the records it trains on."""
    from fairlearn.metrics import demographic_parity_difference

    from amulet_audit.defenses.fairness import FairnessMitigation
    from amulet_audit.ops.forward import predict

    model, data = tabular_inputs
    outcome = FairnessMitigation(eps=0.01).apply(ctx_for(model, data))
    sex = data.sensitive_holdout["sex"]

    def gap(module):
        return demographic_parity_difference(data.y_holdout, predict(module, data.x_holdout), sensitive_features=sex)

    assert gap(outcome.model.module) < gap(model.module) - 0.05
    assert outcome.details["attribute"] == "sex" and outcome.details["mixture_size"] >= 1
    recipe = data.spec.training
    copy = train_copy(outcome.model, data.x_train, data.y_train, recipe, seed=0, sensitive=data.sensitive_train)
    assert hasattr(copy, "members")  # a mixture: the mitigation ran on the copy
    with pytest.raises(ValueError, match="'sex' attribute"):
        train_copy(outcome.model, data.x_train, data.y_train, recipe, seed=0)
