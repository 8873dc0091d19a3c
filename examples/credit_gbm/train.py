"""Train the gradient-boosted credit example: credit.parquet, model.skops (a scikit-learn Pipeline), model.data.yaml.

    python examples/credit_gbm/train.py                  # writes into examples/credit_gbm/
    python examples/credit_gbm/train.py --out /tmp/gbm --seed 1 --n 2000 --trees 100

The same synthetic credit data as examples/credit (its `generate` and `prepare`), and a
Pipeline(StandardScaler, HistGradientBoostingClassifier) fitted on the arrays `load_data` reads back from the
written spec, saved with skops (never pickle). The audit's trained copies are `sklearn.base.clone`s of this
pipeline fitted on the same records, so the pipeline's hyperparameters are its training recipe.
Tests import this file by path and use `fit`, `main`, `TRUST`.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if "_amulet_examples_common" not in sys.modules:  # ../_common.py by path (tests load us by path; examples/ is no package)
    _spec = importlib.util.spec_from_file_location("_amulet_examples_common", HERE.parent / "_common.py")
    _spec.loader.exec_module(sys.modules.setdefault(_spec.name, importlib.util.module_from_spec(_spec)))
common = sys.modules["_amulet_examples_common"]  # it also puts the checkout on sys.path if amulet_audit is not installed

from amulet_audit.inputs.data import AuditData  # noqa: E402

MODEL_FILE = "model.skops"
_credit = common.sibling(HERE.parent / "credit", "train")
DATA_FILE = _credit.DATA_FILE
# The one type in the saved pipeline that skops does not trust by default: the audit needs --trust-type for it.
TRUST = ("sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",)


def build_model(trees: int, seed: int):
    """Pipeline(StandardScaler, HistGradientBoostingClassifier): `trees` boosting iterations of up to 31 leaves,
    learning rate 0.1, no early stopping (so every copy fits the same number of trees), seeded by `seed`."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), HistGradientBoostingClassifier(
        max_iter=trees, learning_rate=0.1, max_leaf_nodes=31, early_stopping=False, random_state=seed))


def fit(data: AuditData, *, trees: int = 200, seed: int = 0):
    """The pipeline fitted on `data`'s train split (features (n, 10) float32, class indices)."""
    return build_model(trees, seed).fit(data.x_train, data.y_train)


def main(argv: list[str] | None = None) -> dict:
    """Generate, fit and write the example; returns the summary numbers."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=HERE, help="folder to write into (default: this example's folder)")
    p.add_argument("--seed", type=int, default=0, help="seed for the data and the model (default 0)")
    p.add_argument("--n", type=int, default=8000, help="records in all, half train (members), half holdout (default 8000)")
    p.add_argument("--trees", type=int, default=200, help="boosting iterations (default 200)")
    args = p.parse_args(argv)
    if args.n < 4 or args.trees < 1:
        p.error("--n must be at least 4 and --trees at least 1")
    began = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    _credit.prepare(_credit.generate(args.n, args.seed)).to_parquet(args.out / DATA_FILE, index=False)
    comment = (f"written by examples/credit_gbm/train.py --seed {args.seed} --n {args.n} --trees {args.trees}; "
               "the model's copies are clones of its pipeline, so `training` does not apply to it")
    try:
        data = common.load_data(common.write_spec(args.out, _credit.spec_dict(), comment))
    except common.InputError as exc:
        p.exit(2, f"credit_gbm: {exc}\n")
    model = fit(data, trees=args.trees, seed=args.seed)
    from skops.io import dump

    dump(model, args.out / MODEL_FILE)
    summary = {"train_accuracy": float(model.score(data.x_train, data.y_train)),
               "holdout_accuracy": float(model.score(data.x_holdout, data.y_holdout)),
               "n_train": len(data.y_train), "n_holdout": len(data.y_holdout),
               "seconds": time.perf_counter() - began}
    print(f"credit_gbm: train accuracy {summary['train_accuracy']:.3f}, holdout accuracy "
          f"{summary['holdout_accuracy']:.3f} [{summary['n_train']} train / {summary['n_holdout']} holdout, "
          f"{args.trees} trees, seed {args.seed}, {summary['seconds']:.1f} s] -> {args.out / MODEL_FILE}")
    return summary


if __name__ == "__main__":
    main()
