"""Reference-model training: the vectorised trainer against one model at a time, and LiRA on what they train.

    nice -n 5 .venv/bin/python benchmarks/bench_reference_models.py        # 16 models of each architecture, 30 epochs
    .venv/bin/python benchmarks/bench_reference_models.py --arch cnn --epochs 10 --threads 2
    .venv/bin/python benchmarks/bench_reference_models.py --arch mlp --lira

Data: scikit-learn's 8x8 digits, a pool of 1,200 images (600 members, 600 non-members). Architectures (`--arch`,
comma-separated): `mlp` (flatten, 64 -> hidden -> 10), `bn-mlp` (flatten, 64 -> hidden without bias, BatchNorm,
ReLU, -> 10), `bn-dropout-mlp` (the same with Dropout 0.2 after the ReLU) and `cnn` (the digits example's CNN,
saved as TorchScript as the example saves it). Each is trained on the 600 members with the digits example's recipe
(Adam, lr 0.002, batch 32, 30 epochs); both trainers then train the same reference models (seeds 0..15, each on a
random half of the pool) with that recipe. Per architecture the script prints the wall times, their ratio, the time
per optimizer step and the largest weight difference between the two trainers (none expected but rounding, except
with Dropout, whose draws differ); with `--lira`, LiRA's AUC and TPR at 1% FPR with those reference models.
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


def digits_example():
    """The digits example's module (examples/digits/train.py): its model, recipe and data preparation."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("digits_example", ROOT / "examples" / "digits" / "train.py")
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    return digits


def digits_pool(digits, out: Path, recipe):
    """The benchmarks' pool: 1,200 digits images (600 members, 600 non-members) written to `out` as the example
    writes them; returns (AuditData, x, y) with x, y the pool's images and labels."""
    import numpy as np

    from amulet_audit.inputs.data import load_data

    images, labels = digits.load_images()
    np.savez_compressed(out / digits.DATA_FILE, **digits.prepare(images, labels, seed=0, n_train=600, n_holdout=600))
    data = load_data(digits.write_spec(out, digits.spec_dict(recipe), "benchmark"))
    return data, np.concatenate([data.x_train, data.x_holdout]), np.concatenate([data.y_train, data.y_holdout])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--arch", default="mlp,bn-mlp,cnn", help="comma-separated: mlp, bn-mlp, bn-dropout-mlp, cnn")
    parser.add_argument("--lira", action="store_true", help="also run LiRA with the reference models")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--hidden", type=int, default=64, help="hidden width of the MLP (default 64)")
    parser.add_argument("--threads", type=int, default=1,
                        help="the cores the benchmark may use (default 1): torch threads of the one-at-a-time loop; "
                             "the vectorised trainer uses them for convolutional models, one thread otherwise (models "
                             "under 1M parameters), as in an audit")
    args = parser.parse_args(argv)

    import torch

    from amulet_audit.inputs.model import ModelHandle, load_model
    from amulet_audit.training.loop import train_model
    from amulet_audit.core.attack import PROFILES, AttackContext
    from amulet_audit.risks.membership import LiRA
    from amulet_audit.training.reference import half_masks, train_reference_models

    from amulet_audit.core.threads import set_cores

    torch.set_num_threads(args.threads)
    set_cores(args.threads)
    digits = digits_example()
    recipe = digits.RECIPE.model_copy(update={"epochs": args.epochs})
    nn = torch.nn
    builders = {
        "mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10)),
        "bn-mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, args.hidden, bias=False), nn.BatchNorm1d(args.hidden),
                                        nn.ReLU(), nn.Linear(args.hidden, 10)),
        "bn-dropout-mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, args.hidden, bias=False),
                                                nn.BatchNorm1d(args.hidden), nn.ReLU(), nn.Dropout(0.2),
                                                nn.Linear(args.hidden, 10)),
        "cnn": digits.build_model,
    }
    archs = [a.strip() for a in args.arch.split(",") if a.strip()]
    unknown = [a for a in archs if a not in builders]
    if unknown:
        parser.error(f"unknown --arch {', '.join(unknown)}; choose from {', '.join(builders)}")
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch imports its compiler on the first optimizer: not timed

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        data, x, y = digits_pool(digits, out, recipe)
        masks = half_masks(len(x), args.models, 0)
        steps = args.epochs * -(-int(masks[0].sum()) // recipe.batch_size)
        load = os.getloadavg()
        print(f"machine: {os.cpu_count()} CPU cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; torch "
              f"threads: {args.threads} for the one-at-a-time loop; for the vectorised trainer, {args.threads} for "
              "convolutional models, else 1 (models under 1M parameters)")
        print(f"task: {args.models} reference models of each architecture, {args.epochs} epochs, {int(masks[0].sum())} "
              f"records each of a {len(x):,}-record pool, batch {recipe.batch_size}, {recipe.optimizer} lr {recipe.lr}: "
              f"{steps} optimizer steps per model")
        for arch in archs:
            torch.manual_seed(0)
            net = builders[arch]()
            train_model(net, data.x_train, data.y_train, recipe, seed=0)
            if arch == "cnn":  # as the example saves it: TorchScript, the default format
                torch.jit.save(torch.jit.script(net), out / "cnn.pt")
                handle = load_model(out / "cnn.pt")
            else:
                handle = ModelHandle(out / arch, "", "state_dict", net, arch)

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

            diff = max(float((m.state_dict()[n].double() - refs.state_dict(k)[n].double()).abs().max())
                       for k, m in enumerate(sequential) for n in m.state_dict())
            print(f"{arch:>15}: vectorised {t_vec:7.2f} s ({1000 * t_vec / steps:.2f} ms per step for all models; "
                  f"{refs.details.get('kernel', refs.details['reason'])}; {refs.details.get('threads', 1)} thread(s))")
            print(f"{'':>15}  one at a time {t_seq:7.2f} s ({1000 * t_seq / (steps * args.models):.2f} ms per step per "
                  f"model); speed-up {t_seq / t_vec:.2f}x; largest weight difference {diff:.1e}"
                  + (" (Dropout: independent draws, equal in distribution only)" if "dropout" in arch else ""))
            rows[arch] = {"vectorised_s": t_vec, "sequential_s": t_seq, "ratio": t_seq / t_vec, "max_diff": diff}

            if args.lira:
                ctx = AttackContext(model=handle, data=data, seed=0, profile=PROFILES["quick"])
                t0 = time.perf_counter()
                lira = LiRA(n_reference=args.models).run(ctx)
                t_lira = time.perf_counter() - t0
                tpr, auc = lira.metrics["tpr_at_fpr_0.01"], lira.metrics["auc"]
                print(f"{'':>15}  LiRA ({args.models} reference models, online, global variance; "
                      f"{lira.details['reference_trainer']} trainer, {t_lira:.1f} s): AUC {auc.value:.3f} "
                      f"[{auc.ci[0]:.3f}, {auc.ci[1]:.3f}], TPR at 1% FPR {tpr.value:.3f} [{tpr.ci[0]:.3f}, "
                      f"{tpr.ci[1]:.3f}] ({lira.details['n_members']} members, {lira.details['n_nonmembers']} non-members)")
                rows[arch].update({"auc": auc.value, "tpr_at_fpr_0.01": tpr.value})
    return rows


if __name__ == "__main__":
    main()
