"""Shared fixtures: small real models on small data, built once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml

# Small models train fastest on one thread, and the suite's subprocesses must not oversubscribe the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
# Trained copies are cached for this run only, never in the user's cache.
os.environ.setdefault("AMULET_AUDIT_CACHE", tempfile.mkdtemp(prefix="amulet-audit-test-cache-"))

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("AMULET_AUDIT_SHARED", ROOT.parent / "shared"))
ADULT = SHARED / "data" / "adult" / "adult.data"
# The end-to-end tests' policy: three kinds of evidence and one cheap defense (the full eu_ai_act runs in the
# Adult example test, marked slow).
ONE_DEFENSE = ROOT / "tests" / "policies" / "one_defense.yaml"
AMULET = [str(ROOT / ".venv" / "bin" / "amulet-audit")] if (ROOT / ".venv" / "bin" / "amulet-audit").exists() else ["amulet-audit"]


def make_tabular(folder: Path, *, n: int = 3000, bias: float = 0.8, seed: int = 0, epochs: int = 15, hidden: int = 32,
                 n_members: int | None = None, weight_decay: float = 0.0, noise: float = 0.7) -> Path:
    """Write a synthetic tabular task (sensitive `sex`, a proxy feature shifted by `bias` for group M), a scripted
    MLP trained on the `train` split, and its data spec. Returns the model path; the spec is its sidecar."""
    import pandas as pd
    import torch

    from amulet_audit.inputs.data import TrainingRecipe
    from amulet_audit.training.loop import train_model

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sex = rng.choice(["F", "M"], n)
    x = rng.normal(size=(n, 6))
    x[:, 0] += (sex == "M") * bias
    y = x[:, 0] + x[:, 1] + rng.normal(scale=noise, size=n) > 0.4
    members = n_members or n // 2
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    df["sex"] = sex
    df["label"] = np.where(y, "yes", "no")
    df["split"] = np.where(np.arange(n) < members, "train", "holdout")
    df.to_csv(folder / "data.csv", index=False)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(6, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2))
    recipe = TrainingRecipe(epochs=epochs, batch_size=64, lr=0.003, weight_decay=weight_decay)
    train_model(model, x[:members].astype(np.float32), y[:members].astype(np.int64), recipe, seed=seed)
    torch.jit.save(torch.jit.script(model), folder / "model.pt")
    spec = {
        "name": "synthetic-tabular", "source": {"format": "csv", "path": "data.csv"},
        "split": {"column": "split", "train": "train", "holdout": "holdout"},
        "features": {"exclude": ["sex"]}, "target": "label", "classes": ["no", "yes"], "positive_label": "yes",
        "sensitive": ["sex"],
        "training": recipe.model_dump(),
    }
    (folder / "model.data.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder / "model.pt"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tabular(tmp_path_factory) -> Path:
    """A biased MLP on synthetic tabular data: model path (sidecar spec beside it)."""
    return make_tabular(tmp_path_factory.mktemp("tabular"))


@pytest.fixture(scope="session")
def tabular_inputs(tabular):
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model

    return load_model(tabular), load_data(tabular.with_name("model.data.yaml"))


def context(model, data, *, seed: int = 0, profile: str = "quick"):
    from amulet_audit.core.attack import PROFILES, AttackContext

    return AttackContext(model=model, data=data, seed=seed, profile=PROFILES[profile])

