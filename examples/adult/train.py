"""Train the UCI Adult example: adult.data -> adult.parquet, model.pt (TorchScript), model.data.yaml.

    python examples/adult/train.py --data-file ../shared/data/adult/adult.data
    python examples/adult/train.py --out /tmp/adult --n-train 2000 --n-holdout 2000 --epochs 5

Without --data-file the data comes from $AMULET_AUDIT_DATA_HOME/adult/adult.data, a cached download, or a
download from the UCI archive (see load_adult.py). The model is trained with
`amulet_audit.inputs.training.train_model` on the arrays `load_data` reads back from the written spec, with the
recipe written into that spec, so the copies the audit re-trains match it.
Tests import this file by path and use `load_adult`, `prepare`, `build_model`, `fit`, `spec_dict`, `write_spec`,
`save_scripted` and `main`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

try:
    import amulet_audit  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(HERE.parents[1]))

from amulet_audit.errors import InputError  # noqa: E402
from amulet_audit.inputs.data import AuditData, DataSpec, TrainingRecipe, load_data  # noqa: E402
from amulet_audit.inputs.training import train_model  # noqa: E402


def _sibling(name: str):
    """Import a module next to this file without putting the folder on sys.path (tests load us by path)."""
    key = f"_amulet_example_adult_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


_loader = _sibling("load_adult")
load_adult = _loader.load_adult
AdultDataError = _loader.AdultDataError

DATA_FILE = "adult.parquet"
SPEC_FILE = "model.data.yaml"
MODEL_FILE = "model.pt"
RECIPE = TrainingRecipe(epochs=20, batch_size=128, optimizer="adam", lr=0.001, weight_decay=0.0)
SENSITIVE = ("sex", "race")
TARGET = "income"
POSITIVE = ">50K"
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
    import torch.nn as nn

    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def spec_dict(recipe: TrainingRecipe = RECIPE) -> dict:
    """The data spec (DESIGN.md, "Data spec") for `prepare`'s table stored next to it as DATA_FILE."""
    return {
        "name": "adult-income",
        "task": "classification",
        "source": {"format": "parquet", "path": DATA_FILE},
        "split": {"column": "split", "train": "train", "holdout": "holdout"},
        "features": {"exclude": list(SENSITIVE) + [TARGET, "split"]},
        "target": TARGET,
        "positive_label": POSITIVE,
        "sensitive": list(SENSITIVE),
        "training": recipe.model_dump(),
    }


def write_spec(out: Path, spec: dict, comment: str) -> Path:
    """Validate `spec` against the DataSpec schema and write it as out/SPEC_FILE."""
    import yaml

    DataSpec.model_validate(spec)
    path = out / SPEC_FILE
    path.write_text(f"# {comment}\n" + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def accuracy(module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = module(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    return float((pred == y).mean())


def fit(data: AuditData, recipe: TrainingRecipe, *, seed: int, hidden: tuple[int, ...] = (64, 32)):
    """Build and train the MLP on `data`'s train split; returns the trained module (eval mode)."""
    import torch

    torch.manual_seed(seed)  # initial weights
    model = build_model(data.n_features, hidden, data.n_classes)
    return train_model(model, data.x_train, data.y_train, recipe, seed=seed)


def save_scripted(model, path: Path) -> None:
    """Save `model` as a *scripted* TorchScript archive: unlike a traced one it honours .train() (DESIGN.md, Inputs)."""
    import torch

    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format the audit reads without code.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(script|save)` is deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))


def main(argv: list[str] | None = None) -> dict:
    """Read, prepare, train and write the example; returns the summary numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this example's folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the training")
    parser.add_argument("--epochs", type=int, default=RECIPE.epochs, help=f"training epochs (default {RECIPE.epochs})")
    parser.add_argument("--data-file", type=Path, default=None, help="a local adult.data (UCI original or with a header line)")
    parser.add_argument("--n-train", type=int, default=None, help="keep only this many training records (members)")
    parser.add_argument("--n-holdout", type=int, default=None, help="keep only this many holdout records")
    parser.add_argument("--offline", action="store_true", help="never download; fail if no local copy is found")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: as fast for this small model, "
                        "and far faster than 2 when other jobs share the cores)")
    args = parser.parse_args(argv)
    for flag, value in (("--n-train", args.n_train), ("--n-holdout", args.n_holdout), ("--epochs", args.epochs), ("--threads", args.threads)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")

    start = time.perf_counter()
    try:
        raw = load_adult(args.data_file, download=not args.offline)
    except AdultDataError as exc:
        parser.exit(2, f"adult: {exc}\n")

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, raw, start)
    except InputError as exc:  # e.g. a cut so small that one label is left
        parser.exit(2, f"adult: {exc}\n")
    finally:
        torch.set_num_threads(threads)  # leave the caller's process as it was


def _run(args: argparse.Namespace, raw, start: float) -> dict:
    import torch

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = RECIPE.model_copy(update={"epochs": args.epochs})

    prepare(raw, seed=args.seed, n_train=args.n_train, n_holdout=args.n_holdout).to_parquet(out / DATA_FILE, index=False)
    spec_path = write_spec(out, spec_dict(recipe), f"written by examples/adult/train.py --seed {args.seed}")
    data = load_data(spec_path)  # train on exactly what the audit will read

    model = fit(data, recipe, seed=args.seed)
    save_scripted(model, out / MODEL_FILE)

    summary = {
        "train_accuracy": accuracy(model, data.x_train, data.y_train),
        "holdout_accuracy": accuracy(model, data.x_holdout, data.y_holdout),
        "n_train": len(data.y_train),
        "n_holdout": len(data.y_holdout),
        "seconds": time.perf_counter() - start,
    }
    print(
        f"adult: train accuracy {summary['train_accuracy']:.3f}, holdout accuracy {summary['holdout_accuracy']:.3f} "
        f"[{summary['n_train']} train / {summary['n_holdout']} holdout, {data.n_features} features, {recipe.epochs} epochs, "
        f"seed {args.seed}, {summary['seconds']:.1f} s] -> {out / MODEL_FILE}"
    )
    return summary


if __name__ == "__main__":
    main()
