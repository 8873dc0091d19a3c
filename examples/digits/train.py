"""Train the digits example: scikit-learn's 8x8 digits -> digits.npz, model.pt (TorchScript), model.data.yaml.

    python examples/digits/train.py                  # writes into examples/digits/
    python examples/digits/train.py --out /tmp/digits --seed 1 --epochs 10

The images ship with scikit-learn (no download). The model is trained with
`amulet_audit.training.loop.train_model` on the arrays `load_data` reads back from the written spec, with the
recipe written into that spec, so the copies the audit re-trains match it.
Tests import this file by path and use `load_images`, `prepare`, `build_model`, `fit`, `spec_dict`, `write_spec`,
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

DATA_FILE = "digits.npz"
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
        "classes": list(range(N_CLASSES)),  # every digit, also when a small cut leaves one out of a split
        "input_shape": list(INPUT_SHAPE),
        "input_range": [0.0, 1.0],
        "training": recipe.model_dump(),
    }


def fit(data: AuditData, recipe: TrainingRecipe, *, seed: int):
    """Build and train the CNN on `data`'s train split; returns the trained module (eval mode)."""
    return common.fit(lambda: build_model(data.n_classes), data, recipe, seed=seed)


def main(argv: list[str] | None = None) -> dict:
    """Prepare, train and write the example; returns the summary numbers."""
    parser = common.parser(__doc__, out=HERE, recipe=RECIPE, seed_help="seed for the split and the training")
    parser.add_argument("--n-train", type=int, default=None, help="keep only this many training images (members)")
    parser.add_argument("--n-holdout", type=int, default=None, help="keep only this many holdout images")
    args = common.parse(parser, argv, {"--n-train": 1, "--n-holdout": 1, "--epochs": 1})
    return common.run_with_threads(parser, "digits", args.threads, lambda: _run(args))


def _run(args: argparse.Namespace) -> dict:
    began = time.perf_counter()
    out, recipe = common.start(args, RECIPE)
    x, y = load_images()
    np.savez_compressed(out / DATA_FILE, **prepare(x, y, seed=args.seed, n_train=args.n_train, n_holdout=args.n_holdout))
    comment = f"written by examples/digits/train.py --seed {args.seed}"
    model, data = common.train(out, spec_dict(recipe), comment, recipe, fit, seed=args.seed)
    return common.report("digits", model, data, recipe, out, seed=args.seed, began=began)


if __name__ == "__main__":
    main()
