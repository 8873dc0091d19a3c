"""Train the UCI Adult example: adult.data -> adult.parquet, model.pt (TorchScript), model.data.yaml.

    python examples/adult/train.py --data-file ../shared/data/adult/adult.data
    python examples/adult/train.py --out /tmp/adult --n-train 2000 --n-holdout 2000 --epochs 5

Without --data-file the data comes from $AMULET_AUDIT_DATA_HOME/adult/adult.data, a cached download, or a
download from the UCI archive (see load_adult.py). The model is trained with
`amulet_audit.training.loop.train_model` on the arrays `load_data` reads back from the written spec, with the
recipe written into that spec, so the copies the audit re-trains match it.
Tests import this file by path and use `load_adult`, `prepare`, `build_model`, `fit`, `spec_dict`, `write_spec`,
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

_loader = common.sibling(HERE, "load_adult")
load_adult = _loader.load_adult
AdultDataError = _loader.AdultDataError

DATA_FILE = "adult.parquet"
RECIPE = TrainingRecipe(epochs=20, batch_size=128, optimizer="adam", lr=0.001, weight_decay=0.0)
SENSITIVE = ("sex", "race")
TARGET = "income"
POSITIVE = ">50K"
CLASSES = ("<=50K", ">50K")  # the model's output order: index 1 is the favourable outcome
# fnlwgt is a census sampling weight, not a trait of the person; education duplicates education_num.
DROPPED = ("fnlwgt", "education")
NUMERIC = ("age", "education_num", "capital_gain", "capital_loss", "hours_per_week")
LOG = ("capital_gain", "capital_loss")  # mostly zero with a long tail: log1p before standardising
CATEGORICAL = ("workclass", "marital_status", "occupation", "relationship", "native_country")


def prepare(raw, *, seed: int = 0, n_train: int | None = None, n_holdout: int | None = None):
    """The table the audit reads, from `load_adult()`'s DataFrame.

    Rows with a missing value are dropped; the rest are split at random in halves, train (members) and
    holdout, each optionally cut to its first `n_train` / `n_holdout` records (the others are left out).
    Categorical features become 0/1 columns named `column=value` (every value in the cleaned data, so the
    feature set does not depend on the cut); numeric ones are standardised with the train split's statistics.
    `sex` and `race` stay as strings (sensitive, not features); `income` is `<=50K` / `>50K`.
    """
    import pandas as pd

    df = raw.drop(columns=list(DROPPED)).dropna().reset_index(drop=True)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(df))
    half = len(df) // 2
    train_idx, hold_idx = order[:half][:n_train], order[half:][:n_holdout]
    split = np.full(len(df), "", dtype=object)  # "" = left out by the cut
    split[train_idx] = "train"
    split[hold_idx] = "holdout"
    keep = split != ""
    train = split == "train"

    cols: dict[str, np.ndarray] = {}
    for name in NUMERIC:
        v = df[name].to_numpy(dtype=np.float64)
        if name in LOG:
            v = np.log1p(v)
        mean, std = v[train].mean(), v[train].std()
        cols[name] = ((v - mean) / (std if std > 0 else 1.0)).astype(np.float32)
    for name in CATEGORICAL:
        values = df[name].to_numpy()
        for level in sorted(set(values.tolist())):
            cols[f"{name}={level}"] = (values == level).astype(np.float32)
    for name in SENSITIVE + (TARGET,):
        cols[name] = df[name].to_numpy(dtype=object)
    cols["split"] = split
    return pd.DataFrame(cols).loc[keep].reset_index(drop=True)


def build_model(n_features: int, hidden: tuple[int, ...] = (64, 32), n_classes: int = 2):
    """An MLP (Linear-ReLU per hidden layer, then Linear to class logits); scriptable with torch.jit.script."""
    return common.mlp(n_features, hidden, n_classes)


def spec_dict(recipe: TrainingRecipe = RECIPE) -> dict:
    """The data spec (DESIGN.md, "Data spec") for `prepare`'s table stored next to it as DATA_FILE."""
    return {
        "name": "adult-income",
        "task": "classification",
        "source": {"format": "parquet", "path": DATA_FILE},
        "split": {"column": "split", "train": "train", "holdout": "holdout"},
        "features": {"exclude": list(SENSITIVE) + [TARGET, "split"]},
        "target": TARGET,
        "classes": list(CLASSES),
        "positive_label": POSITIVE,
        "sensitive": list(SENSITIVE),
        "training": recipe.model_dump(),
    }


def fit(data: AuditData, recipe: TrainingRecipe, *, seed: int, hidden: tuple[int, ...] = (64, 32)):
    """Build and train the MLP on `data`'s train split; returns the trained module (eval mode)."""
    return common.fit(lambda: build_model(data.n_features, hidden, data.n_classes), data, recipe, seed=seed)


def main(argv: list[str] | None = None) -> dict:
    """Read, prepare, train and write the example; returns the summary numbers."""
    parser = common.parser(__doc__, out=HERE, recipe=RECIPE, seed_help="seed for the split and the training")
    parser.add_argument("--data-file", type=Path, default=None, help="a local adult.data (UCI original or with a header line)")
    parser.add_argument("--n-train", type=int, default=None, help="keep only this many training records (members)")
    parser.add_argument("--n-holdout", type=int, default=None, help="keep only this many holdout records")
    parser.add_argument("--offline", action="store_true", help="never download; fail if no local copy is found")
    args = common.parse(parser, argv, {"--n-train": 1, "--n-holdout": 1, "--epochs": 1})

    began = time.perf_counter()
    try:
        raw = load_adult(args.data_file, download=not args.offline)
    except AdultDataError as exc:
        parser.exit(2, f"adult: {exc}\n")
    return common.run_with_threads(parser, "adult", args.threads, lambda: _run(args, raw, began))


def _run(args: argparse.Namespace, raw, began: float) -> dict:
    out, recipe = common.start(args, RECIPE)
    prepare(raw, seed=args.seed, n_train=args.n_train, n_holdout=args.n_holdout).to_parquet(out / DATA_FILE, index=False)
    comment = f"written by examples/adult/train.py --seed {args.seed}"
    model, data = common.train(out, spec_dict(recipe), comment, recipe, fit, seed=args.seed)
    return common.report("adult", model, data, recipe, out, seed=args.seed, began=began,
                         inside=f"{data.n_features} features, ")


if __name__ == "__main__":
    main()
