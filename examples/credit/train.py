"""Train the credit-scoring example: synthetic data -> credit.parquet, model.pt (TorchScript), model.data.yaml.

    python examples/credit/train.py                  # writes into examples/credit/
    python examples/credit/train.py --out /tmp/credit --seed 1 --epochs 10 --n 2000

The model is trained with `amulet_audit.inputs.training.train_model` on the arrays `load_data` reads back from
the written spec, with the recipe written into that spec, so the copies the audit re-trains match it.
Tests import this file by path and use `generate`, `prepare`, `build_model`, `fit`, `spec_dict`, `write_spec`,
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
    key = f"_amulet_example_credit_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, HERE / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


_gen = _sibling("generate")
generate = _gen.generate
FEATURES: tuple[str, ...] = _gen.FEATURES
SENSITIVE: tuple[str, ...] = _gen.SENSITIVE
LABELS: tuple[str, str] = _gen.LABELS

DATA_FILE = "credit.parquet"
SPEC_FILE = "model.data.yaml"
MODEL_FILE = "model.pt"
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
        "name": "synthetic-credit",
        "task": "classification",
        "source": {"format": "parquet", "path": DATA_FILE},
        "split": {"column": "split", "train": "train", "holdout": "holdout"},
        "features": list(FEATURES),
        "target": "approved",
        "positive_label": LABELS[0],
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
    """Generate, train and write the example; returns the summary numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this example's folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the data and the training")
    parser.add_argument("--epochs", type=int, default=RECIPE.epochs, help=f"training epochs (default {RECIPE.epochs})")
    parser.add_argument("--n", type=int, default=8000, help="records in all, half train (members) and half holdout (default 8000)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: as fast for this small model, "
                        "and far faster than 2 when other jobs share the cores)")
    args = parser.parse_args(argv)
    for flag, value, least in (("--n", args.n, 4), ("--epochs", args.epochs, 1), ("--threads", args.threads, 1)):
        if value < least:
            parser.error(f"{flag} must be at least {least}")

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    except InputError as exc:  # e.g. a cut so small that one label is left
        parser.exit(2, f"credit: {exc}\n")
    finally:
        torch.set_num_threads(threads)  # leave the caller's process as it was


def _run(args: argparse.Namespace) -> dict:
    import torch

    start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = RECIPE.model_copy(update={"epochs": args.epochs})

    prepare(generate(args.n, args.seed)).to_parquet(out / DATA_FILE, index=False)
    spec_path = write_spec(out, spec_dict(recipe), f"written by examples/credit/train.py --seed {args.seed} --n {args.n}")
    data = load_data(spec_path)  # train on exactly what the audit will read

    model = fit(data, recipe, seed=args.seed)
    save_scripted(model, out / MODEL_FILE)

    summary = {
        "train_accuracy": accuracy(model, data.x_train, data.y_train),
        "holdout_accuracy": accuracy(model, data.x_holdout, data.y_holdout),
        "impact_ratio_sex": impact_ratio(model, data),
        "n_train": len(data.y_train),
        "n_holdout": len(data.y_holdout),
        "seconds": time.perf_counter() - start,
    }
    print(
        f"credit: train accuracy {summary['train_accuracy']:.3f}, holdout accuracy {summary['holdout_accuracy']:.3f}, "
        f"impact ratio (female/male) {summary['impact_ratio_sex']:.2f} "
        f"[{summary['n_train']} train / {summary['n_holdout']} holdout, {recipe.epochs} epochs, seed {args.seed}, "
        f"{summary['seconds']:.1f} s] -> {out / MODEL_FILE}"
    )
    return summary


if __name__ == "__main__":
    main()
