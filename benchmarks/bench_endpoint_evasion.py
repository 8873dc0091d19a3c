"""Gradient-free evasion through a prediction service against white-box PGD on the model file.

The credit MLP (examples/credit, trained here into --out) is served on 127.0.0.1 by examples/endpoint/serve.py
(answers: probabilities). Through the service (`--endpoint`'s client, every query counted), the score-based Square
attack (Andriushchenko et al., ECCV 2020) and the label-only HopSkipJump (Chen et al., S&P 2020); on the
TorchScript file, PGD (Madry et al., ICLR 2018) with the policy's 20 steps and a stronger run (100 steps, 5
restarts). Same holdout records, same L-inf eps, same seed. Prints robust accuracy per attack and eps, the
queries each gradient-free attack made, and whether either is stronger than the strongest PGD (it must not be,
beyond a record or two of noise).

    python benchmarks/bench_endpoint_evasion.py --samples 200 --eps 0.1 0.3
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _serve_module():
    spec = importlib.util.spec_from_file_location("_bench_endpoint_serve", ROOT / "examples" / "endpoint" / "serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("build/bench_endpoint"))
    parser.add_argument("--samples", type=int, default=200, help="holdout records attacked (default 200)")
    parser.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.3], help="L-inf budgets (data units)")
    parser.add_argument("--square-queries", type=int, default=1000, help="Square queries per record (quick: 1000)")
    parser.add_argument("--hsj-queries", type=int, default=2000, help="HopSkipJump queries per record (quick: 2000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    import yaml

    from amulet_audit.core.attack import PROFILES, AttackContext
    from amulet_audit.core.registry import attack_class
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.endpoint import load_endpoint
    from amulet_audit.inputs.model import load_model
    from amulet_audit.ops.scores import attach

    torch.set_num_threads(1)
    credit = args.out / "credit"
    if not (credit / "model.pt").is_file():
        subprocess.run([sys.executable, ROOT / "examples" / "credit" / "train.py", "--out", credit], check=True)
    serve = _serve_module()
    spec = yaml.safe_load((credit / "model.data.yaml").read_text())
    service = serve.Service(credit / "model.pt", spec["features"], [str(c) for c in spec["classes"]]).start()
    try:
        spec_path = serve.endpoint_spec(credit / "model.data.yaml", args.out, batch_size=1000)
        data = load_data(spec_path)
        remote = attach(load_endpoint(service.url, data), data)
        local = attach(load_model(credit / "model.pt"), data)
        print(f"credit MLP, {args.samples} holdout records, L-inf, seed {args.seed}")
        print(f"{'eps':>5}  {'attack':<28} {'access':<22} {'robust acc':>10} {'queries':>11} {'seconds':>8}")
        for eps in args.eps:
            runs = [("pgd (20 steps, 1 restart)", "pgd", {"steps": 20, "restarts": 1}, local, "file, gradients"),
                    ("pgd (100 steps, 5 restarts)", "pgd", {"steps": 100, "restarts": 5}, local, "file, gradients"),
                    ("square", "square", {"queries": args.square_queries}, remote, "service, scores"),
                    ("hopskipjump", "hopskipjump", {"queries": args.hsj_queries}, remote, "service, labels")]
            values = {}
            for label, name, params, model, access in runs:
                ctx = AttackContext(model=model, data=data, seed=args.seed, profile=PROFILES["quick"])
                before = remote.queries()["records_queried"]
                t = time.perf_counter()
                out = attack_class(name)(eps=eps, norm="linf", samples=args.samples, **params).run(ctx)
                seconds = time.perf_counter() - t
                queries = remote.queries()["records_queried"] - before
                values[label] = out.metrics["robust_accuracy"].value
                print(f"{eps:>5g}  {label:<28} {access:<22} {values[label]:>10.3f} {queries:>11,} {seconds:>8.1f}")
            strongest = min(values["pgd (20 steps, 1 restart)"], values["pgd (100 steps, 5 restarts)"])
            for label in ("square", "hopskipjump"):
                gap = values[label] - strongest
                print(f"       {label} - strongest PGD: {gap:+.3f} ({'not stronger' if gap >= -1 / args.samples else 'STRONGER'})")
        print(f"service counted {service.records:,} records in {service.requests:,} requests; client: "
              f"{remote.queries()['records_queried']:,} records, {remote.queries()['requests']:,} requests")
    finally:
        service.stop()


if __name__ == "__main__":
    main()
