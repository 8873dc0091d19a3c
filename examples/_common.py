"""What the example scripts (`examples/*/train.py`) share: file names, the spec writer, the TorchScript saver,
the MLP, training, the command-line skeleton and the summary line.

Not a package module: each train.py loads this file by path, under the name `_amulet_examples_common`, as
it loads its siblings (tests import the train.py files by path, so `examples/` is never on sys.path), and
re-exports what it used to define itself (`write_spec`, `save_scripted`, `SPEC_FILE`, ...).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np

try:
    import amulet_audit  # noqa: F401
except ImportError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from amulet_audit.core.errors import InputError  # noqa: E402
from amulet_audit.inputs.data import AuditData, DataSpec, TrainingRecipe, load_data  # noqa: E402
from amulet_audit.training.loop import train_model  # noqa: E402

SPEC_FILE = "model.data.yaml"
MODEL_FILE = "model.pt"


def sibling(here: Path, name: str):
    """Import `here/name.py` without putting the folder on sys.path (tests load the scripts by path)."""
    key = f"_amulet_example_{here.name}_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, here / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def write_spec(out: Path, spec: dict, comment: str) -> Path:
    """Validate `spec` against the DataSpec schema and write it as out/SPEC_FILE."""
    import yaml

    DataSpec.model_validate(spec)
    path = out / SPEC_FILE
    path.write_text(f"# {comment}\n" + yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def save_scripted(model, path: Path) -> None:
    """Save `model` as a *scripted* TorchScript archive: unlike a traced one it honours .train() (DESIGN.md, Inputs)."""
    import torch

    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the format the audit reads without code.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.(script|save)` is deprecated", category=DeprecationWarning)
        torch.jit.save(torch.jit.script(model), str(path))


def accuracy(module, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        pred = module(torch.as_tensor(x, dtype=torch.float32)).argmax(1).numpy()
    return float((pred == y).mean())


def mlp(n_features: int, hidden: tuple[int, ...], n_classes: int):
    """An MLP (Linear-ReLU per hidden layer, then Linear to class logits); scriptable with torch.jit.script."""
    import torch.nn as nn

    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, n_classes))
    return nn.Sequential(*layers)


def fit(make_model: Callable[[], object], data: AuditData, recipe: TrainingRecipe, *, seed: int):
    """Seed torch, build the model with `make_model()` and train it on `data`'s train split (eval mode on return)."""
    import torch

    torch.manual_seed(seed)  # initial weights
    return train_model(make_model(), data.x_train, data.y_train, recipe, seed=seed)


def parser(doc: str, *, out: Path, recipe: TrainingRecipe, seed_help: str) -> argparse.ArgumentParser:
    """The options every example has first: --out, --seed, --epochs (`parse` adds --threads last)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=out, help="folder to write into (default: this example's folder)")
    p.add_argument("--seed", type=int, default=0, help=seed_help)
    p.add_argument("--epochs", type=int, default=recipe.epochs, help=f"training epochs (default {recipe.epochs})")
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None, least: dict[str, int]) -> argparse.Namespace:
    """Add --threads, parse `argv` and stop with a usage error for any flag in `least` (then --threads) set below its minimum."""
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: as fast for this small model, "
                   "and far faster than 2 when other jobs share the cores)")
    args = p.parse_args(argv)
    for flag, minimum in {**least, "--threads": 1}.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is not None and value < minimum:
            p.error(f"{flag} must be at least {minimum}")
    return args


def run_with_threads(p: argparse.ArgumentParser, name: str, threads: int, run: Callable[[], dict]) -> dict:
    """`run()` on `threads` torch CPU threads, restoring the caller's count; an InputError exits with status 2."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return run()
    except InputError as exc:  # e.g. a cut so small that one label is left
        p.exit(2, f"{name}: {exc}\n")
    finally:
        torch.set_num_threads(before)  # leave the caller's process as it was


def start(args: argparse.Namespace, recipe: TrainingRecipe) -> tuple[Path, TrainingRecipe]:
    """Create the output folder; the recipe with --epochs applied."""
    args.out.mkdir(parents=True, exist_ok=True)
    return args.out, recipe.model_copy(update={"epochs": args.epochs})


def train(out: Path, spec: dict, comment: str, recipe: TrainingRecipe, fit: Callable, *, seed: int):
    """Write the spec, train with `fit` on exactly what the audit will read from it, save out/MODEL_FILE.

    Returns (model, data). The data file the spec names must already be in `out`.
    """
    data = load_data(write_spec(out, spec, comment))  # train on exactly what the audit will read
    model = fit(data, recipe, seed=seed)
    save_scripted(model, out / MODEL_FILE)
    return model, data


def report(name: str, model, data: AuditData, recipe: TrainingRecipe, out: Path, *, seed: int, began: float,
           extra: dict | None = None, after: str = "", inside: str = "") -> dict:
    """Print the one-line summary and return its numbers: accuracies, `extra`, split sizes, seconds since `began`.

    `after` is printed after the accuracies, `inside` at the start of the bracket.
    """
    summary = {
        "train_accuracy": accuracy(model, data.x_train, data.y_train),
        "holdout_accuracy": accuracy(model, data.x_holdout, data.y_holdout),
        **(extra or {}),
        "n_train": len(data.y_train),
        "n_holdout": len(data.y_holdout),
        "seconds": time.perf_counter() - began,
    }
    print(
        f"{name}: train accuracy {summary['train_accuracy']:.3f}, holdout accuracy {summary['holdout_accuracy']:.3f}{after} "
        f"[{summary['n_train']} train / {summary['n_holdout']} holdout, {inside}{recipe.epochs} epochs, seed {seed}, "
        f"{summary['seconds']:.1f} s] -> {out / MODEL_FILE}"
    )
    return summary
