"""Peak memory of LiRA with the thorough profile's reference models on the full UCI Adult data.

    nice -n 5 /usr/bin/time -v .venv/bin/python benchmarks/bench_reference_memory.py \
        --data-file ../shared/data/adult/adult.data            # 64 reference models (thorough), 20 epochs

The Adult example (examples/adult: an 80-feature MLP 64-32-2, saved as TorchScript) is trained into a temporary
folder on the full data (15,081 members, 15,081 holdout records); LiRA then runs with the thorough profile: its
64 reference models (each trained on a random half of the 30,162 attacked records with the example's recipe) and
every member and non-member attacked. The script prints the reference trainer, the wall time, LiRA's AUC and the
process's peak resident set size (`resource.getrusage`, as `/usr/bin/time -v` reports it: "Maximum resident set
size"). The audit's budget: 2 GB.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-file", type=Path, required=True, help="a local adult.data (see examples/adult)")
    parser.add_argument("--profile", default="thorough", choices=("quick", "standard", "thorough"))
    parser.add_argument("--epochs", type=int, default=None, help="reference models' epochs (default: the example's 20)")
    args = parser.parse_args(argv)
    if not args.data_file.is_file():
        parser.exit(2, f"{args.data_file}: not found; give the path of adult.data.\n")

    import importlib.util

    from amulet_audit.core.attack import PROFILES, AttackContext
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.risks.membership import LiRA

    spec = importlib.util.spec_from_file_location("adult_example", ROOT / "examples" / "adult" / "train.py")
    adult = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(adult)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        extra = ["--epochs", str(args.epochs)] if args.epochs else []
        adult.main(["--out", str(out), "--data-file", str(args.data_file), "--offline", *extra])
        model = load_model(out / "model.pt")
        data = load_data(out / "model.data.yaml")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        ctx = AttackContext(model=model, data=data, seed=0, profile=PROFILES[args.profile])
        t0 = time.perf_counter()
        lira = LiRA().run(ctx)
        seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux -> MiB
    auc = lira.metrics["auc"]
    print(f"LiRA, {args.profile} profile: {lira.details['reference_models']} reference models "
          f"({lira.details['reference_trainer']}: {lira.details['reference_trainer_note']}), "
          f"{lira.details['reference_train_size']:,} records each; {lira.details['n_members']:,} members and "
          f"{lira.details['n_nonmembers']:,} non-members attacked; {seconds:.1f} s; AUC {auc.value:.3f} "
          f"[{auc.ci[0]:.3f}, {auc.ci[1]:.3f}]")
    print(f"peak resident set size: {peak:,.0f} MiB (before LiRA: {before:,.0f} MiB); budget 2,048 MiB")
    return {"peak_mib": peak, "seconds": seconds, "auc": auc.value}


if __name__ == "__main__":
    main()
