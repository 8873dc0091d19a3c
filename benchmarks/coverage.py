"""Coverage of each interval type the audit uses, by simulation with more repetitions than tests/test_coverage.py.

    nice -n 5 .venv/bin/python benchmarks/coverage.py                    # 1,000 repetitions, 300 replicates
    nice -n 5 .venv/bin/python benchmarks/coverage.py --repetitions 300  # quicker

Prints one row per interval type and setting: the share of repetitions whose 95% interval covers the true
population value, and its Monte Carlo standard error. The simulations are those of tests/test_coverage.py (fixed
seeds, known populations; see its docstring); TPR at a fixed FPR is shown both with the audit's interval
(`membership.tpr_at_fpr_interval`, a Bayesian bootstrap with one more member and non-member) and with the ordinary
percentile bootstrap of the same estimate, which under-covers; so is membership advantage (the audit's interval
corrects its lower end for the optimism of the chosen threshold, `membership.advantage_interval`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _simulations():
    spec = importlib.util.spec_from_file_location("coverage_simulations", ROOT / "tests" / "test_coverage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> list[tuple[str, str, float, float]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=1000)
    parser.add_argument("--replicates", type=int, default=300, help="bootstrap replicates per interval (default 300)")
    parser.add_argument("--skip-slow", action="store_true", help="leave out TPR at 0.1%% FPR with 4,000 non-members")
    args = parser.parse_args(argv)
    sim = _simulations()
    r, b = args.repetitions, args.replicates

    rows: list[tuple[str, str, callable]] = [
        ("exact binomial (Clopper-Pearson)", "rate p=0.05, n=200", lambda: sim.binomial_coverage(0.05, 200, 5 * r)),
        ("exact binomial (Clopper-Pearson)", "rate p=0.3, n=200", lambda: sim.binomial_coverage(0.3, 200, 5 * r)),
        ("exact binomial (Clopper-Pearson)", "rate p=0.9, n=500", lambda: sim.binomial_coverage(0.9, 500, 5 * r)),
        ("percentile bootstrap", "difference of group rates (0.6 of 300 vs 0.4 of 200)",
         lambda: sim.group_gap_coverage(r, b)),
        ("percentile bootstrap", "mean of per-record drops (n=300)", lambda: sim.mean_coverage(r, b)),
        ("stratified bootstrap", "AUC, 200 + 200, mu=1", lambda: sim.auc_coverage(r, b)),
        ("stratified bootstrap", "AUC, 1000 + 1000, mu=0.5", lambda: sim.auc_coverage(r, b, n=1000, mu=0.5)),
    ]
    for n, mu in ((200, 0.0), (300, 1.0), (1000, 0.1), (1000, 1.5)):
        rows.append(("optimism-corrected bootstrap (audit)", f"advantage, {n} + {n}, mu={mu}",
                     lambda n=n, mu=mu: sim.advantage_coverage(r, b, n, mu)))
        rows.append(("stratified bootstrap (ordinary)", f"advantage, {n} + {n}, mu={mu}",
                     lambda n=n, mu=mu: sim.advantage_coverage(r, b, n, mu, ordinary=True)))
    for n, mus in ((100, (0.0, 2.0)), (400, (0.0, 1.0, 2.5)), (1000, (1.0, 2.0))):
        for mu in mus:
            rows.append(("Bayesian bootstrap (audit)", f"TPR at 1% FPR, {n} + {n}, mu={mu}",
                         lambda n=n, mu=mu: sim.tpr_coverage(r, b, n, mu)[0]))
    for n, mu in ((400, 1.0), (400, 2.5), (1000, 2.0)):
        rows.append(("stratified bootstrap (ordinary)", f"TPR at 1% FPR, {n} + {n}, mu={mu}",
                     lambda n=n, mu=mu: sim.tpr_coverage(r, b, n, mu, ordinary=True)[0]))
    if not args.skip_slow:
        reps = max(r // 4, 100)
        rows.append(("Bayesian bootstrap (audit)", f"TPR at 0.1% FPR, 4000 + 4000, mu=2 ({reps} repetitions)",
                     lambda: sim.tpr_coverage(reps, b, 4000, 2.0, target=0.001)[0]))
        rows.append(("stratified bootstrap (ordinary)", f"TPR at 0.1% FPR, 4000 + 4000, mu=2 ({reps} repetitions)",
                     lambda: sim.tpr_coverage(reps, b, 4000, 2.0, target=0.001, ordinary=True)[0]))
    rows.append(("paired bootstrap", "change in accuracy (0.80 -> 0.75, n=400)", lambda: sim.paired_coverage(r, b)))

    print(f"nominal 95%; {r} repetitions ({5 * r} for the binomial), {b} bootstrap replicates each\n")
    print(f"{'interval':38} {'statistic':58} {'coverage':>8} {'s.e.':>6} {'seconds':>8}")
    out = []
    for method, what, run in rows:
        start = time.perf_counter()
        coverage = run()
        seconds = time.perf_counter() - start
        m = 5 * r if method.startswith("exact") else (max(r // 4, 100) if "0.1%" in what else r)
        se = (coverage * (1 - coverage) / m) ** 0.5
        print(f"{method:38} {what:58} {coverage:8.3f} {se:6.3f} {seconds:8.1f}", flush=True)
        out.append((method, what, coverage, se))
    return out


if __name__ == "__main__":
    main()
