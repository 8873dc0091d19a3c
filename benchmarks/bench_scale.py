"""Wall time of one audit with 1 and 2 workers: local processes (`--jobs`) and Ray tasks (`--executor ray`).

Usage: python benchmarks/bench_scale.py [--executor local|ray|both] [--policy eu_ai_act] [--profile standard]
       [--data-file ../shared/data/adult/adult.data]

Trains the Adult example model on the full data (15,081 training and 15,081 holdout records), then audits it once
per configuration, each with a fresh cache of trained copies (nothing reused between runs), and prints the seconds,
the speed-up of 2 workers over 1 and whether the numbers of results.json are identical. The speed-up is bounded by
the longest chain of jobs (e.g. the baseline's attacks, then fairness mitigation aimed at what they found, then
the attacks on the mitigated model) and by the machine's cores.
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
AMULET = ROOT / ".venv" / "bin" / "amulet-audit"


def numbers(path: Path) -> list:
    r = json.loads(path.read_text())
    rows = [(q["id"], q["value"], q["ci"], q["verdict"]) for q in r["requirements"]]
    rows += [(d["name"], d.get("model_sha256"), [(q["id"], q["value"], q["ci"]) for q in d["requirements"]])
             for d in r["defenses"]]
    rows += [(i["defense"], i["requirement"], i["delta"], i["delta_ci"], i["flagged"]) for i in r["interactions"]]
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--executor", choices=["local", "ray", "both"], default="both")
    ap.add_argument("--policy", default="eu_ai_act")
    ap.add_argument("--profile", default="standard")
    ap.add_argument("--data-file", default=str(ROOT.parent / "shared" / "data" / "adult" / "adult.data"))
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    subprocess.run([sys.executable, ROOT / "examples" / "adult" / "train.py", "--out", work, "--data-file",
                    args.data_file, "--offline"], check=True)
    executors = ["local", "ray"] if args.executor == "both" else [args.executor]
    print(f"{'executor':<8} {'workers':>7} {'seconds':>9} {'speed-up':>9}  numbers")
    for executor in executors:
        seconds, reference = {}, None
        for workers in (1, 2):
            out = work / f"{executor}-{workers}"
            cmd = [str(AMULET), str(work / "model.pt"), "--policy", args.policy, "--profile", args.profile,
                   "--out", str(out), "--no-pdf", "--quiet", "--exit-zero", "--cache-dir", str(work / f"cache-{out.name}"),
                   "--jobs", str(workers)]
            if executor == "ray":
                cmd += ["--executor", "ray"]
            t = time.perf_counter()
            subprocess.run(cmd, check=True)
            seconds[workers] = time.perf_counter() - t
            got = numbers(out / "results.json")
            same = "reference" if reference is None else ("identical" if got == reference else "DIFFERENT")
            reference = reference or got
            ratio = f"{seconds[1] / seconds[workers]:.2f}x"
            print(f"{executor:<8} {workers:>7} {seconds[workers]:>9.1f} {ratio:>9}  {same}", flush=True)


if __name__ == "__main__":
    main()
