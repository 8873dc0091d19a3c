"""Conformance checks as a pytest helper, for the built-ins and for plugin authors alike (as scikit-learn's
`parametrize_with_checks`).

In a plugin's test suite::

    from amulet_audit.testing import parametrize_conformance
    from my_plugin import MyAttack

    @parametrize_conformance([MyAttack])
    def test_my_attack_conforms(check):
        check()

Each check is one of `amulet_audit.core.conformance.component_checks`, run on `tiny_inputs()`: a small MLP trained
on 400 synthetic records with a sensitive attribute and a favourable outcome (built once per process, seconds).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from amulet_audit.core.conformance import Check, component_checks

__all__ = ["check_component", "parametrize_conformance", "registered_components", "tiny_inputs"]


@functools.lru_cache(maxsize=1)
def tiny_inputs() -> tuple[Any, Any]:
    """(ModelHandle, AuditData) of a scripted MLP 6 -> 16 -> 2 trained for 5 epochs on 200 of 400 synthetic records
    (the other 200 are the holdout), with a sensitive attribute `group` (A/B, shifting one feature) and the
    favourable outcome 1. Written to a temporary folder and loaded as a user's files would be; built once."""
    import pandas as pd
    import torch
    import yaml

    from amulet_audit.inputs.data import TrainingRecipe, load_data
    from amulet_audit.core.mode import set_mode
    from amulet_audit.inputs.model import load_model
    from amulet_audit.training.loop import train_model

    folder = Path(tempfile.mkdtemp(prefix="amulet-audit-conformance-"))
    n, members = 400, 200
    rng = np.random.default_rng(0)
    group = rng.choice(["A", "B"], n)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    x[:, 0] += (group == "B") * 0.8
    y = x[:, 0] + x[:, 1] + rng.normal(scale=0.7, size=n) > 0.4
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["group"] = group
    frame["label"] = y.astype(np.int64)  # class indices: 1 is the favourable outcome
    frame["split"] = np.where(np.arange(n) < members, "train", "holdout")
    frame.to_csv(folder / "data.csv", index=False)
    recipe = TrainingRecipe(epochs=5, batch_size=32, lr=0.01)
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    train_model(module, x[:members], y[:members].astype(np.int64), recipe, seed=0)
    torch.jit.save(torch.jit.script(set_mode(module, False)), folder / "model.pt")
    spec = {"name": "conformance", "source": {"format": "csv", "path": "data.csv"},
            "split": {"column": "split", "train": "train", "holdout": "holdout"},
            "features": {"exclude": ["group"]}, "target": "label", "positive_label": 1, "sensitive": ["group"],
            "training": recipe.model_dump()}
    (folder / "model.data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return load_model(folder / "model.pt"), load_data(folder / "model.data.yaml")


def check_component(component: Any, inputs: Any = None) -> Iterator[tuple[str, Check]]:
    """The named conformance checks of `component` (an Attack or Defense subclass, or a MetricSpec), as
    `(name, check)` pairs; `check()` raises AssertionError naming the violation. Runs on `inputs` ((model, data) or
    a callable returning them), by default `tiny_inputs()`."""
    return component_checks(component, tiny_inputs if inputs is None else inputs)


def registered_components() -> list[tuple[str, Any]]:
    """("attack:<name>" / "defense:<name>" / "metric:<name>", component) for everything registered through entry
    points, built-ins and installed plugins alike."""
    from amulet_audit.core import registry

    return ([(f"attack:{n}", r.obj) for n, r in sorted(registry.attacks().items())]
            + [(f"defense:{n}", r.obj) for n, r in sorted(registry.defenses().items())]
            + [(f"metric:{n}", r.obj) for n, r in sorted(registry.metrics().items())])


def parametrize_conformance(components: Iterable[Any] | None = None, inputs: Any = None):
    """A `pytest.mark.parametrize("check", ...)` over every conformance check of `components` (default: every
    registered component), with ids "<component>-<check name>". The test calls `check()`."""
    import pytest

    if components is None:
        labelled = registered_components()
    else:
        labelled = [(getattr(c, "name", None) or getattr(c, "__name__", repr(c)), c) for c in components]
    params = [pytest.param(check, id=f"{label}-{name}")
              for label, component in labelled for name, check in check_component(component, inputs)]
    return pytest.mark.parametrize("check", params)
