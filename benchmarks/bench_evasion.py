"""Evasion benchmark: amulet-audit's PGD (and APGD-CE) against IBM ART's ProjectedGradientDescent.

Same model (an MLP trained on UCI Adult with examples/adult's builders), same records, same L-inf budget,
steps, step size (2.5 * eps / steps) and one random start. Prints both robust accuracies, both wall times and
their ratios. Targets: our robust accuracy no higher than ART's + 0.5 points, and faster.

    pip install -e '.[bench]'        # adversarial-robustness-toolbox, for this benchmark only
    python benchmarks/bench_evasion.py --data-file ../shared/data/adult/adult.data

Wall times are the best of --repeats runs (the machine may be shared), with torch on --threads threads.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _adult_example():
    spec = importlib.util.spec_from_file_location("_bench_adult_train", ROOT / "examples" / "adult" / "train.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _best_time(fn, repeats: int):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-file", type=Path, default=ROOT.parent / "shared" / "data" / "adult" / "adult.data")
    parser.add_argument("--n-train", type=int, default=8000, help="training records for the MLP")
    parser.add_argument("--examples", type=int, default=2000, help="holdout records attacked")
    parser.add_argument("--eps", type=float, default=0.1, help="L-inf budget (standardised feature units)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from art.attacks.evasion import ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    from amulet_audit.inputs.data import load_data
    from amulet_audit.risks.evasion import apgd_attack, pgd_attack

    torch.set_num_threads(args.threads)
    ex = _adult_example()
    out = Path("build") / "bench-evasion"
    out.mkdir(parents=True, exist_ok=True)
    recipe = ex.RECIPE.model_copy(update={"epochs": args.epochs})
    ex.prepare(ex.load_adult(args.data_file, download=False), seed=args.seed, n_train=args.n_train,
               n_holdout=args.examples).to_parquet(out / ex.DATA_FILE)
    data = load_data(ex.write_spec(out, ex.spec_dict(recipe), "written by benchmarks/bench_evasion.py"))
    model = ex.fit(data, recipe, seed=args.seed).eval()
    x, y = data.x_holdout[: args.examples], data.y_holdout[: args.examples]
    step = 2.5 * args.eps / args.steps

    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(), input_shape=x.shape[1:],
                                   nb_classes=data.n_classes, clip_values=None, device_type="cpu")
    art_pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=args.eps, eps_step=step, max_iter=args.steps,
                                       num_random_init=1, batch_size=args.batch_size, verbose=False)

    def run_art():
        np.random.seed(args.seed)  # ART draws its random start from numpy's global generator
        # true labels, as ours uses: without y, ART attacks the model's own predictions, which on misclassified
        # records pushes them back to the right class
        adv = art_pgd.generate(x=x, y=np.eye(data.n_classes, dtype=np.float32)[y])
        return classifier.predict(adv, batch_size=args.batch_size).argmax(1) == y

    def run_ours():
        return pgd_attack(model, x, y, eps=args.eps, norm="linf", steps=args.steps, step_size=step, restarts=1,
                          random_start=True, bounds=None, seed=args.seed, batch_size=args.batch_size)

    def run_apgd():
        return apgd_attack(model, x, y, eps=args.eps, norm="linf", steps=args.steps, restarts=1, bounds=None,
                           seed=args.seed, batch_size=args.batch_size)

    with torch.no_grad():
        clean = float((model(torch.as_tensor(x)).argmax(1).numpy() == y).mean())
    t_art, ok_art = _best_time(run_art, args.repeats)
    t_ours, ok_ours = _best_time(run_ours, args.repeats)
    t_apgd, ok_apgd = _best_time(run_apgd, args.repeats)
    r_art, r_ours, r_apgd = float(ok_art.mean()), float(ok_ours.mean()), float(ok_apgd.mean())
    print(f"UCI Adult MLP {data.n_features}-64-32-2, {len(x)} holdout records, L-inf eps={args.eps:g}, {args.steps} steps, "
          f"step {step:g}, 1 random start, batch {args.batch_size}, torch threads {args.threads}, best of {args.repeats}")
    print(f"clean accuracy                  {clean:.4f}")
    print(f"ART ProjectedGradientDescent    robust accuracy {r_art:.4f}   wall {t_art:7.3f} s")
    print(f"amulet-audit pgd_attack         robust accuracy {r_ours:.4f}   wall {t_ours:7.3f} s")
    print(f"amulet-audit apgd_attack        robust accuracy {r_apgd:.4f}   wall {t_apgd:7.3f} s")
    print(f"pgd: robust accuracy ours - ART = {100 * (r_ours - r_art):+.2f} points (target <= +0.50); "
          f"time ART / ours = {t_art / t_ours:.2f}x (target > 1)")
    print(f"apgd: robust accuracy ours - ART = {100 * (r_apgd - r_art):+.2f} points; time ART / apgd = {t_art / t_apgd:.2f}x")
    verdict = r_ours <= r_art + 0.005 and t_ours < t_art
    print("targets met" if verdict else "targets NOT met")
    return {"art": (r_art, t_art), "pgd": (r_ours, t_ours), "apgd": (r_apgd, t_apgd), "met": verdict}


if __name__ == "__main__":
    main()
