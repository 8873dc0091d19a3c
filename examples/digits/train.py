"""Train the digits example: scikit-learn's 8x8 digits -> digits.npz, model.pt (TorchScript), model.data.yaml.

    python examples/digits/train.py                  # writes into examples/digits/
    python examples/digits/train.py --out /tmp/digits --seed 1 --epochs 10

The images ship with scikit-learn (no download). The model is trained with
`amulet_audit.inputs.training.train_model` on the arrays `load_data` reads back from the written spec, with the
recipe written into that spec, so the copies the audit re-trains match it.
Tests import this file by path and use `load_images`, `prepare`, `build_model`, `fit`, `spec_dict`, `write_spec`,
`save_scripted` and `main`.
"""

from __future__ import annotations

import argparse
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

DATA_FILE = "digits.npz"
SPEC_FILE = "model.data.yaml"
MODEL_FILE = "model.pt"
RECIPE = TrainingRecipe(epochs=30, batch_size=32, optimizer="adam", lr=0.002, weight_decay=0.0)
INPUT_SHAPE = (1, 8, 8)
N_CLASSES = 10


def load_images() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits: images (n, 1, 8, 8) float32 in [0, 1] and labels (n,) int64 in 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images.astype(np.float32) / 16.0).reshape(-1, *INPUT_SHAPE)  # pixel values are 0..16
    return np.clip(x, 0.0, 1.0), bunch.target.astype(np.int64)


def prepare(x: np.ndarray, y: np.ndarray, *, seed: int = 0, n_train: int | None = None, n_holdout: int | None = None) -> dict:
    """The arrays written to DATA_FILE: `X`, `y` and `split` ("train"/"holdout").

    A random half of the images, stratified by digit, is the train split (members), the rest the holdout;
    each can be cut to its first `n_train` / `n_holdout` records (the others are left out).
    """
    rng = np.random.default_rng(seed)
    train_idx, hold_idx = [], []
    for digit in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == digit))
        half = len(idx) // 2
        train_idx.append(idx[:half])
        hold_idx.append(idx[half:])
    train_idx = rng.permutation(np.concatenate(train_idx))[:n_train]
    hold_idx = rng.permutation(np.concatenate(hold_idx))[:n_holdout]
    keep = np.sort(np.concatenate([train_idx, hold_idx]))
    split = np.where(np.isin(keep, train_idx), "train", "holdout")  # a fixed-width str array: no pickle in the npz
    return {"X": np.ascontiguousarray(x[keep], dtype=np.float32), "y": y[keep].astype(np.int64), "split": split}


def build_model(n_classes: int = N_CLASSES):
    """A small CNN for 1x8x8 images: conv 1->8 3x3, ReLU, conv 8->16 3x3, ReLU, 2x2 max-pool, linear to logits."""
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 16, kernel_size=3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, n_classes),
    )


def spec_dict(recipe: TrainingRecipe = RECIPE) -> dict:
    """The data spec (DESIGN.md, "Data spec") for `prepare`'s arrays stored next to it as DATA_FILE."""
    return {
        "name": "sklearn-digits",
        "task": "classification",
        "source": {"format": "npz", "path": DATA_FILE},
        "split": {"column": "split", "train": "train", "holdout": "holdout"},
        "features": {"array": "X"},
        "target": "y",
        "input_shape": list(INPUT_SHAPE),
        "input_range": [0.0, 1.0],
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


def fit(data: AuditData, recipe: TrainingRecipe, *, seed: int):
    """Build and train the CNN on `data`'s train split; returns the trained module (eval mode)."""
    import torch

    torch.manual_seed(seed)  # initial weights
    model = build_model(data.n_classes)
    return train_model(model, data.x_train, data.y_train, recipe, seed=seed)


def save_scripted(model, path: Path) -> None:
    """Save `model` as a *scripted* TorchScript archive: unlike a traced one it honours .train() (DESIGN.md, Inputs)."""
    import torch

    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format the audit reads without code.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(script|save)` is deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))


def main(argv: list[str] | None = None) -> dict:
    """Prepare, train and write the example; returns the summary numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this example's folder)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and the training")
    parser.add_argument("--epochs", type=int, default=RECIPE.epochs, help=f"training epochs (default {RECIPE.epochs})")
    parser.add_argument("--n-train", type=int, default=None, help="keep only this many training images (members)")
    parser.add_argument("--n-holdout", type=int, default=None, help="keep only this many holdout images")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: as fast for this small model, "
                        "and far faster than 2 when other jobs share the cores)")
    args = parser.parse_args(argv)
    for flag, value in (("--n-train", args.n_train), ("--n-holdout", args.n_holdout), ("--epochs", args.epochs), ("--threads", args.threads)):
        if value is not None and value < 1:
            parser.error(f"{flag} must be at least 1")

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args)
    except InputError as exc:  # e.g. a cut so small that one label is left
        parser.exit(2, f"digits: {exc}\n")
    finally:
        torch.set_num_threads(threads)  # leave the caller's process as it was


def _run(args: argparse.Namespace) -> dict:
    import torch

    start = time.perf_counter()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    recipe = RECIPE.model_copy(update={"epochs": args.epochs})

    x, y = load_images()
    np.savez_compressed(out / DATA_FILE, **prepare(x, y, seed=args.seed, n_train=args.n_train, n_holdout=args.n_holdout))
    spec_path = write_spec(out, spec_dict(recipe), f"written by examples/digits/train.py --seed {args.seed}")
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
        f"digits: train accuracy {summary['train_accuracy']:.3f}, holdout accuracy {summary['holdout_accuracy']:.3f} "
        f"[{summary['n_train']} train / {summary['n_holdout']} holdout, {recipe.epochs} epochs, seed {args.seed}, "
        f"{summary['seconds']:.1f} s] -> {out / MODEL_FILE}"
    )
    return summary


if __name__ == "__main__":
    main()
