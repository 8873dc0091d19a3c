"""Reference-model training: the vectorised trainer against one model at a time, and LiRA on what they train.

    .venv/bin/python benchmarks/bench_reference_models.py              # 16 MLPs, 30 epochs, 1 thread
    .venv/bin/python benchmarks/bench_reference_models.py --threads 2 --hidden 128

Data: scikit-learn's 8x8 digits, a pool of 1,200 images (600 members, 600 non-members). The audited model is an
MLP (flatten, 64 -> hidden -> 10) trained on the 600 members with the digits example's recipe (Adam, lr 0.002,
batch 32, 30 epochs). Both trainers train the same 16 reference MLPs (seeds 0..15, each on a random half of the
pool) with that recipe; the script checks they reach the same weights, then prints the wall times, their ratio,
the time per optimizer step, and LiRA's AUC and TPR at 1% FPR with 16 reference models.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of the MLP (default 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for the one-at-a-time loop (default 1); the vectorised trainer uses one "
                             "thread for models under 1M parameters whatever this says")
    args = parser.parse_args(argv)

    import importlib.util

    import numpy as np
    import torch

    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import ModelHandle
    from amulet_audit.training.loop import train_model
    from amulet_audit.core.attack import PROFILES, AttackContext
    from amulet_audit.risks.membership import LiRA
    from amulet_audit.training.reference import half_masks, train_reference_models

    torch.set_num_threads(args.threads)
    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" / "digits" / "train.py")
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    recipe = digits.RECIPE.model_copy(update={"epochs": args.epochs})

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        images, labels = digits.load_images()
        np.savez_compressed(out / digits.DATA_FILE, **digits.prepare(images, labels, seed=0, n_train=600, n_holdout=600))
        data = load_data(digits.write_spec(out, digits.spec_dict(recipe), "benchmark"))

        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, args.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(args.hidden, data.n_classes))
        train_model(net, data.x_train, data.y_train, recipe, seed=0)
        handle = ModelHandle(out / "mlp", "", "state_dict", net, f"MLP 64-{args.hidden}-10")

        x = np.concatenate([data.x_train, data.x_holdout])
        y = np.concatenate([data.y_train, data.y_holdout])
        masks = half_masks(len(x), args.models, 0)

        t0 = time.perf_counter()
        refs = train_reference_models(handle, x, y, masks, recipe, seed=0)
        t_vec = time.perf_counter() - t0

        t0 = time.perf_counter()
        sequential = []
        for k in range(args.models):
            module = handle.fresh_copy(k)
            train_model(module, x[masks[k]], y[masks[k]], recipe, seed=k)
            sequential.append(module)
        t_seq = time.perf_counter() - t0

        diff = max(float((m.state_dict()[n] - refs.state_dict(k)[n]).abs().max())
                   for k, m in enumerate(sequential) for n in m.state_dict())
        steps = args.epochs * -(-int(masks[0].sum()) // recipe.batch_size)

        ctx = AttackContext(model=handle, data=data, seed=0, profile=PROFILES["quick"])
        t0 = time.perf_counter()
        lira = LiRA(n_reference=args.models).run(ctx)
        t_lira = time.perf_counter() - t0

    tpr = lira.metrics["tpr_at_fpr_0.01"]
    auc = lira.metrics["auc"]
    load = os.getloadavg()
    print(f"machine: {os.cpu_count()} CPU cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch threads: "
          f"{args.threads} for the one-at-a-time loop, 1 for the vectorised trainer")
    print(f"task: {args.models} reference MLPs (64-{args.hidden}-10), {args.epochs} epochs, {int(masks[0].sum())} records "
          f"each of a {len(x):,}-record pool, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr}: "
          f"{steps} optimizer steps per model")
    print(f"vectorised trainer:            {t_vec:7.2f} s  ({1000 * t_vec / steps:.2f} ms per step for all models; "
          f"{refs.details['trainer']}, {refs.details.get('kernel', refs.details['reason'])})")
    print(f"one model at a time:           {t_seq:7.2f} s  ({1000 * t_seq / (steps * args.models):.2f} ms per step per model)")
    print(f"speed-up: {t_seq / t_vec:.2f}x   largest weight difference between the two: {diff:.1e}")
    print(f"LiRA ({args.models} reference models, online, global variance; {lira.details['reference_trainer']} trainer, "
          f"{t_lira:.1f} s): AUC {auc.value:.3f} [{auc.ci[0]:.3f}, {auc.ci[1]:.3f}], TPR at 1% FPR {tpr.value:.3f} "
          f"[{tpr.ci[0]:.3f}, {tpr.ci[1]:.3f}] ({lira.details['n_members']} members, {lira.details['n_nonmembers']} non-members)")
    return {"vectorised_s": t_vec, "sequential_s": t_seq, "ratio": t_seq / t_vec, "max_diff": diff,
            "auc": auc.value, "tpr_at_fpr_0.01": tpr.value}


if __name__ == "__main__":
    main()
