"""The GPU against the CPU: reference models trained together, and a whole audit, on each device.

    .venv/bin/python benchmarks/bench_device.py                     # 16 reference models of the digits MLP and CNN
    .venv/bin/python benchmarks/bench_device.py --models 64 --audit # and the digits example's audit, cpu vs cuda

Data: scikit-learn's 8x8 digits, a pool of 1,200 images, each reference model on a random half, the digits example's
recipe (Adam, lr 0.002, batch 32) for `--epochs`. Per architecture the script prints the vectorised trainer's wall
time on the CPU (`--threads` torch threads) and on `--device`, their ratio, and the largest weight difference between
the two (rounding only, except where Dropout draws on the device). With `--audit`, the digits example's model is
audited with tests/policies/every_risk_kind.yaml (quick profile, no PDF) with `--device cpu` and with `--device`,
and the script prints both wall times and the largest difference of a requirement's value. Where torch sees no
CUDA GPU it says so and stops.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=4, help="torch CPU threads for the CPU run (default 4)")
    parser.add_argument("--audit", action="store_true", help="also audit the digits example on both devices")
    args = parser.parse_args(argv)

    import torch

    from amulet_audit.core import device
    from amulet_audit.inputs.model import ModelHandle
    from amulet_audit.training.reference import half_masks, train_reference_models

    if not torch.cuda.is_available():
        print("torch sees no CUDA GPU on this machine: nothing to compare.")
        return {}
    name = device.resolve(args.device)
    print(f"device: {device.describe(name)}; CPU run with {args.threads} torch threads")
    from bench_reference_models import digits_example, digits_pool

    digits = digits_example()
    recipe = digits.RECIPE.model_copy(update={"epochs": args.epochs})
    nn = torch.nn
    builders = {"mlp": lambda: nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)),
                "cnn": digits.build_model}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        _, x, y = digits_pool(digits, out, recipe)
        masks = half_masks(len(x), args.models, 0)
        for arch, build in builders.items():
            torch.manual_seed(0)
            handle = ModelHandle(out / arch, "", "state_dict", build().eval(), arch)
            trained, seconds = {}, {}
            for where in ("cpu", name):
                device.use(where)
                torch.set_num_threads(args.threads)
                t0 = time.perf_counter()
                refs = train_reference_models(handle, x, y, masks, recipe, seed=0)
                if where != "cpu":
                    torch.cuda.synchronize()
                seconds[where] = time.perf_counter() - t0
                trained[where] = refs
            device.use("cpu")
            diff = max(float((trained[name].state_dict(k)[n].double().cpu()
                              - trained["cpu"].state_dict(k)[n].double()).abs().max())
                       for k in range(args.models) for n in trained["cpu"].state_dict(k))
            ratio = seconds["cpu"] / seconds[name]
            print(f"{arch:>4}: {args.models} reference models, {args.epochs} epochs: cpu {seconds['cpu']:.2f} s, "
                  f"{name} {seconds[name]:.2f} s, speed-up {ratio:.2f}x; largest weight difference {diff:.1e} "
                  f"({trained['cpu'].details.get('kernel')})")
            rows[arch] = {"cpu_s": seconds["cpu"], "device_s": seconds[name], "ratio": ratio, "max_diff": diff}

        if args.audit:
            model = ROOT / "examples" / "digits" / "model.pt"
            if not model.is_file():
                subprocess.run([sys.executable, str(ROOT / "examples" / "digits" / "train.py")], check=True)
            results, seconds = {}, {}
            for where in ("cpu", name):
                t0 = time.perf_counter()
                subprocess.run([sys.executable, "-m", "amulet_audit", str(model), "--policy",
                                str(ROOT / "tests" / "policies" / "every_risk_kind.yaml"), "--out", str(out / where),
                                "--profile", "quick", "--no-pdf", "--quiet", "--exit-zero", "--no-cache",
                                "--device", where], check=True)
                seconds[where] = time.perf_counter() - t0
                results[where] = json.loads((out / where / "results.json").read_text())
            gap = max((abs(a["value"] - b["value"]) for a, b in zip(results["cpu"]["requirements"],
                                                                    results[name]["requirements"])
                       if a["value"] is not None and b["value"] is not None), default=0.0)
            print(f"audit (digits, every_risk_kind, quick): cpu {seconds['cpu']:.1f} s, {name} {seconds[name]:.1f} s, "
                  f"speed-up {seconds['cpu'] / seconds[name]:.2f}x; largest difference of a requirement's value "
                  f"{gap:.4f}")
            rows["audit"] = {"cpu_s": seconds["cpu"], "device_s": seconds[name], "max_value_gap": gap}
    return rows


if __name__ == "__main__":
    main()
