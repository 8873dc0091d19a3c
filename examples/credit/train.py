"""Train the credit-scoring example: synthetic data -> credit.parquet, model.pt (TorchScript), model.data.yaml.

    python examples/credit/train.py                  # writes into examples/credit/
    python examples/credit/train.py --out /tmp/credit --seed 1 --epochs 10 --n 2000

The model is trained with `amulet_audit.training.loop.train_model` on the arrays `load_data` reads back from
the written spec, with the recipe written into that spec, so the copies the audit re-trains match it.
Tests import this file by path and use `generate`, `prepare`, `build_model`, `fit`, `spec_dict`, `write_spec`,
`save_scripted` and `main`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
if "_amulet_examples_common" not in sys.modules:  # ../_common.py by path (tests load us by path; examples/ is no package)
    _spec = importlib.util.spec_from_file_location("_amulet_examples_common", HERE.parent / "_common.py")
    _spec.loader.exec_module(sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec)))
common = sys.modules["_amulet_examples_common"]  # it also puts the checkout on sys.path if amulet_audit is not installed

from amulet_audit.inputs.data import AuditData, TrainingRecipe  # noqa: E402

SPEC_FILE, MODEL_FILE = common.SPEC_FILE, common.MODEL_FILE
write_spec, save_scripted, accuracy = common.write_spec, common.save_scripted, common.accuracy

_gen = common.sibling(HERE, "generate")
generate = _gen.generate
FEATURES: tuple[str, ...] = _gen.FEATURES
SENSITIVE: tuple[str, ...] = _gen.SENSITIVE
LABELS: tuple[str, str] = _gen.LABELS

DATA_FILE = "credit.parquet"
RECIPE = TrainingRecipe(epochs=60, batch_size=64, optimizer="adam", lr=0.002, weight_decay=0.0)
# Binary flags stay 0/1; every other feature is standardised with the train split's mean and deviation.
BINARY = ("part_time",)
# Heavy right tails: log1p before standardising.
LOG = ("income_k", "loan_amount_k", "late_payments", "career_break_years")


def prepare(df):
    """The table the audit reads: features standardised on the train split, the analysis-only column dropped.

    Returns a new DataFrame with FEATURES (float64), `sex`, `age_group`, `approved` and `split`.
    """
    out = df[list(FEATURES) + list(SENSITIVE) + ["approved", "split"]].copy()
    train = (out["split"] == "train").to_numpy()
    for name in FEATURES:
        v = out[name].to_numpy(dtype=np.float64)
        if name in BINARY:
            out[name] = v
            continue
        if name in LOG:
            v = np.log1p(v)
        mean, std = v[train].mean(), v[train].std()
        out[name] = (v - mean) / (std if std > 0 else 1.0)
    return out


def build_model(n_features: int = len(FEATURES), hidden: tuple[int, ...] = (64, 64), n_classes: int = 2):
    """An MLP (Linear-ReLU per hidden layer, then Linear to class logits); scriptable with torch.jit.script."""
    return common.mlp(n_features, hidden, n_classes)


def spec_dict(recipe: TrainingRecipe = RECIPE) -> dict:
    """The data spec (DESIGN.md, "Data spec") for `prepare`'s table stored next to it as DATA_FILE."""
    return {
        "name": "synthetic-credit",
        "task": "classification",
        "source": {"format": "parquet", "path": DATA_FILE},
        "split": {"column": "split", "train": "train", "holdout": "holdout"},
        "features": list(FEATURES),
        "target": "approved",
        "classes": list(LABELS),  # output 0 = approved, 1 = denied: the model is trained on what the spec says
        "positive_label": LABELS[0],
        "sensitive": list(SENSITIVE),
        "training": recipe.model_dump(),
    }


def impact_ratio(module, data: AuditData, attribute: str = "sex", protected: str = "female") -> float:
    """Holdout selection rate (favourable predictions) of `protected` divided by that of everyone else."""
    import torch

    with torch.no_grad():
        pred = module(torch.as_tensor(data.x_holdout)).argmax(1).numpy()
    favourable = pred == data.positive_index
    group = data.sensitive_holdout[attribute] == protected
    return float(favourable[group].mean() / max(favourable[~group].mean(), 1e-12))


def fit(data: AuditData, recipe: TrainingRecipe, *, seed: int, hidden: tuple[int, ...] = (64, 64)):
    """Build and train the MLP on `data`'s train split; returns the trained module (eval mode)."""
    return common.fit(lambda: build_model(data.n_features, hidden, data.n_classes), data, recipe, seed=seed)


def main(argv: list[str] | None = None) -> dict:
    """Generate, train and write the example; returns the summary numbers."""
    parser = common.parser(__doc__, out=HERE, recipe=RECIPE, seed_help="seed for the data and the training")
    parser.add_argument("--n", type=int, default=8000, help="records in all, half train (members) and half holdout (default 8000)")
    args = common.parse(parser, argv, {"--n": 4, "--epochs": 1})
    return common.run_with_threads(parser, "credit", args.threads, lambda: _run(args))


def _run(args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    out, recipe = common.start(args, RECIPE)
    prepare(generate(args.n, args.seed)).to_parquet(out / DATA_FILE, index=False)
    comment = f"written by examples/credit/train.py --seed {args.seed} --n {args.n}"
    model, data = common.train(out, spec_dict(recipe), comment, recipe, fit, seed=args.seed)
    ratio = impact_ratio(model, data)
    return common.report("credit", model, data, recipe, out, seed=args.seed, began=began,
                         extra={"impact_ratio_sex": ratio}, after=f", impact ratio (female/male) {ratio:.2f}")


if __name__ == "__main__":
    main()
