"""Evasion: adversarial examples within an L-inf or L2 budget, on the model's real input range.

Three attacks share one evaluation (sampling, robustness curve, metrics, gradient-masking checks):
- `fgsm`: the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015), one step of size eps;
- `pgd`: projected gradient descent with random start (Madry et al., ICLR 2018);
- `apgd`: APGD-CE, auto-PGD on cross-entropy with a checkpointed step-size schedule and momentum
  (Croce & Hein, ICML 2020), combined per record with a PGD run (worst case of the two).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, MetricSpec, rate
from amulet_audit.core.params import Boolean, Interval, OptionalOf, Options
from amulet_audit.core.stats import binomial_ci
from amulet_audit.ops.perturb import direction, loss_grad, pgd_steps, project, random_delta, view

CLEAN_ACCURACY = MetricSpec("clean_accuracy", "Accuracy on unperturbed holdout records.", higher_is_worse=False, kind="rate")
ROBUST_ACCURACY = MetricSpec(
    "robust_accuracy", "Share of holdout records classified correctly under the worst perturbation found within the budget.",
    higher_is_worse=False, kind="rate",
)
ATTACK_SUCCESS_RATE = MetricSpec(
    "attack_success_rate", "Share of attacked records on which the attack reaches its goal.", higher_is_worse=True, kind="rate"
)

# Robustness-curve epsilons as multiples of the policy's epsilon, by number of curve points.
_CURVE = {4: (0, 0.5, 1, 2), 6: (0, 0.25, 0.5, 1, 2, 4), 8: (0, 0.125, 0.25, 0.5, 1, 1.5, 2, 4)}
# Robust accuracy above this at the very large budget suggests gradient masking (Carlini et al., 2019,
# "On Evaluating Adversarial Robustness", §5: an unbounded attack must reach 100% success).
NEAR_ZERO = 0.05
BATCH = 512


def _clean_correct(module, xb, yb):
    import torch

    with torch.no_grad():
        return module(xb).argmax(1) == yb


def _batches(x, y, batch_size: int):
    import torch

    for start in range(0, len(x), batch_size):
        yield (start, torch.as_tensor(x[start:start + batch_size], dtype=torch.float32),
               torch.as_tensor(y[start:start + batch_size], dtype=torch.long))


def fgsm_attack(module, x, y, *, eps: float, norm: str, bounds: tuple[float, float] | None,
                batch_size: int = BATCH) -> np.ndarray:
    """Fast gradient (sign) method: one step of length `eps` (input units) along the loss gradient's sign (L-inf)
    or its normalised direction (L2, the "fast gradient method"), clipped to `bounds`.

    Returns a boolean array: True where the record stays correctly classified."""
    robust = np.ones(len(x), dtype=bool)
    for start, xb, yb in _batches(x, y, batch_size):
        ok = _clean_correct(module, xb, yb)
        if ok.any() and eps > 0:
            _, grad, _ = loss_grad(module, xb, yb)
            adv = project(xb, xb + eps * direction(grad, norm), eps, norm, bounds)
            ok &= _clean_correct(module, adv, yb)
        robust[start:start + len(xb)] = ok.numpy()
    return robust


def _worst_case(module, x, y, *, restarts: int, eps: float, batch_size: int, run) -> np.ndarray:
    """Boolean per record: True where it is classified correctly and no restart of `run` fooled it.

    `run(xa, ya)` attacks the records still standing (tensors) and returns, per record, whether some iterate
    misclassified it; fooled records are not attacked again."""
    robust = np.ones(len(x), dtype=bool)
    for start, xb, yb in _batches(x, y, batch_size):
        ok = _clean_correct(module, xb, yb)
        for _ in range(restarts):
            if not ok.any() or eps == 0:
                break
            live = ok.nonzero().squeeze(1)
            ok[live] = ~run(xb[live], yb[live])
        robust[start:start + len(xb)] = ok.numpy()
    return robust


def pgd_attack(module, x, y, *, eps: float, norm: str, steps: int, step_size: float, restarts: int,
               random_start: bool, bounds: tuple[float, float] | None, seed: int, batch_size: int = BATCH) -> np.ndarray:
    """Untargeted PGD on cross-entropy (Madry et al. 2018); `eps` and `step_size` in input units. Returns a boolean
    array: True where the record stays correctly classified under every restart and every iterate (worst case)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def run(xa, ya):
        delta = random_delta(xa, eps, norm, gen) if random_start else torch.zeros_like(xa)
        adv, fooled = pgd_steps(module, xa, ya, project(xa, xa + delta, eps, norm, bounds), eps=eps, norm=norm,
                                steps=steps, step_size=step_size, bounds=bounds)
        return fooled | ~_clean_correct(module, adv, ya)

    return _worst_case(module, x, y, restarts=restarts, eps=eps, batch_size=batch_size, run=run)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, §3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if 0 < q <= 1})


def apgd_attack(module, x, y, *, eps: float, norm: str, steps: int, restarts: int, bounds: tuple[float, float] | None,
                seed: int, rho: float = 0.75, alpha: float = 0.75, batch_size: int = BATCH) -> np.ndarray:
    """APGD-CE (Croce & Hein, ICML 2020, Algorithm 1) on cross-entropy; `eps` in input units.

    Step size starts at 2*eps; at each checkpoint w_j it is halved for a record (and the iterate restarts from
    that record's best point) when the loss rose in fewer than `rho` of the steps since w_{j-1} (condition 1), or
    when the step was not halved at w_{j-1} and the best loss has not improved since (condition 2). Steps use
    momentum `alpha`: x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})).
    Returns a boolean array: True where no iterate of any restart misclassifies the record."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    checkpoints = set(apgd_checkpoints(steps))

    def run(xa, ya):
        x0 = project(xa, xa + random_delta(xa, eps, norm, gen), eps, norm, bounds)
        return _apgd_run(module, xa, ya, x0, eps=eps, norm=norm, steps=steps, bounds=bounds,
                         checkpoints=checkpoints, rho=rho, alpha=alpha)

    return _worst_case(module, x, y, restarts=restarts, eps=eps, batch_size=batch_size, run=run)


def _apgd_run(module, x, y, x0, *, eps, norm, steps, bounds, checkpoints, rho, alpha):
    """One APGD-CE run from `x0`; returns, per record, whether some iterate was misclassified."""
    import torch

    n = len(x)
    eta = torch.full((n,), 2.0 * eps)
    cur = x0
    f, g, fooled = loss_grad(module, cur, y)
    prev = cur.clone()
    best_x, best_g, best_f = cur.clone(), g.clone(), f.clone()
    best_f_last = best_f.clone()
    reduced_last = torch.zeros(n, dtype=torch.bool)
    rises = torch.zeros(n)
    last = 0
    for k in range(steps):
        z = project(x, cur + view(eta, cur) * direction(g, norm), eps, norm, bounds)
        new = z if k == 0 else project(x, cur + alpha * (z - cur) + (1 - alpha) * (cur - prev), eps, norm, bounds)
        f_new, g_new, wrong = loss_grad(module, new, y)
        fooled |= wrong
        rises += (f_new > f).float()
        better = f_new > best_f
        best_x[better], best_g[better], best_f[better] = new[better], g_new[better], f_new[better]
        prev, cur, f, g = cur, new, f_new, g_new
        if k + 1 in checkpoints:
            oscillating = rises < rho * (k + 1 - last)  # condition 1
            stalled = ~reduced_last & (best_f <= best_f_last)  # condition 2
            reduce = oscillating | stalled
            eta[reduce] /= 2
            # restart the halved records from their best point, without momentum
            cur, prev, g, f = cur.clone(), prev.clone(), g.clone(), f.clone()
            cur[reduce], prev[reduce], g[reduce], f[reduce] = best_x[reduce], best_x[reduce], best_g[reduce], best_f[reduce]
            reduced_last, best_f_last = reduce, best_f.clone()
            rises.zero_()
            last = k + 1
    return fooled


# --- the shared evaluation ----------------------------------------------------------------------


def large_epsilon(eps: float, norm: str, bounds: tuple[float, float] | None, x: np.ndarray) -> float:
    """A budget so large that a working attack must fool nearly every record: the whole input range when it is
    known (L-inf: its width; L2: width * sqrt(dimension)), else 10x the policy's eps and at least 4 per-feature
    standard deviations (times sqrt(dimension) for L2)."""
    d = int(np.prod(x.shape[1:]))
    scale = 1.0 if norm == "linf" else math.sqrt(d)
    if bounds is not None:
        return float((bounds[1] - bounds[0]) * scale)
    std = float(np.median(x.reshape(len(x), -1).std(axis=0))) if len(x) > 1 else 1.0
    return float(max(10 * eps, 4 * (std or 1.0) * scale))


def robustness_curve(robust_at: Callable[[float, bool], np.ndarray], *, eps: float, multiples, large_eps: float,
                     confidence: float, progress: Callable[[float], None] | None = None) -> tuple[list[dict], np.ndarray]:
    """Robust accuracy at eps * each multiple, plus the gradient-masking check at `large_eps`.

    `robust_at(e, main)` returns the per-record robustness at budget `e` (`main`: the policy's budget, which
    gets the full restart budget). Returns the curve `[{eps, robust_accuracy, ci, n}]` (the large-budget point
    carries `"check": "large_eps"`) and the per-record result at the policy's eps."""
    points = [(eps * m, m == 1, False) for m in multiples]
    if large_eps > eps * max(multiples):
        points.append((large_eps, False, True))
    curve, main = [], None
    for i, (e, is_main, is_check) in enumerate(points):
        ok = robust_at(e, is_main)
        if is_main:
            main = ok
        n, k = len(ok), int(ok.sum())
        point = {"eps": e, "robust_accuracy": k / n if n else 0.0, "ci": list(binomial_ci(k, n, confidence)), "n": n}
        if is_check:
            point["check"] = "large_eps"
        curve.append(point)
        if progress:
            progress((i + 1) / len(points))
    if main is None:
        main = robust_at(eps, True)
    return curve, main


def curve_warnings(curve: list[dict]) -> list[str]:
    """Signs of gradient masking (Athalye et al., ICML 2018; Carlini et al., 2019): robust accuracy that rises
    with epsilon beyond its interval, or stays well above zero at a budget that covers the input range."""
    out = []
    for a, b in zip(curve, curve[1:]):
        if b["robust_accuracy"] > a["ci"][1]:
            out.append(
                f"Robust accuracy rose from {a['robust_accuracy']:.3f} at eps={a['eps']:g} to {b['robust_accuracy']:.3f} at "
                f"eps={b['eps']:g}: a sign of gradient masking; treat the robust accuracy as an upper bound."
            )
    for p in curve:
        if p.get("check") == "large_eps" and p["robust_accuracy"] > NEAR_ZERO:
            out.append(
                f"At the very large budget eps={p['eps']:g} robust accuracy is still {p['robust_accuracy']:.3f} "
                f"(expected near 0): the attack does not find adversarial examples that must exist, a sign of "
                "gradient masking or of too few steps; treat the robust accuracy as an upper bound."
            )
    return out


_EVASION_PARAMS = {
    "eps": Interval(Real, 0, None, closed="neither"),
    "norm": Options(frozenset({"linf", "l2"})),
    "samples": OptionalOf(Interval(Integral, 1, None)),
}


class _Evasion(Attack):
    """Shared evaluation: records sampled from the holdout up to the profile's budget, the attack run at each
    curve epsilon, metrics at the policy's epsilon with exact binomial intervals."""

    risk = "evasion"
    metrics = ("clean_accuracy", "robust_accuracy", "attack_success_rate")
    needs = frozenset({"gradients"})

    def _robust(self, p: dict, module, x, y, eps: float, main: bool, ctx: AttackContext) -> np.ndarray:
        raise NotImplementedError

    def _describe(self, p: dict, ctx: AttackContext) -> dict[str, Any]:
        return {}

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data, module = ctx.data, ctx.model.module
        rng = np.random.default_rng(ctx.seed)
        n = min(len(data.x_holdout), p["samples"] or ctx.profile.eval_samples)
        idx = np.sort(rng.choice(len(data.x_holdout), n, replace=False))
        x, y = data.x_holdout[idx], data.y_holdout[idx]
        eps, norm, bounds = float(p["eps"]), p["norm"], data.input_range
        self._extra: dict[str, Any] = {}

        multiples = _CURVE.get(ctx.profile.curve_points, _CURVE[6])
        big = large_epsilon(eps, norm, bounds, x)
        curve, robust_main = robustness_curve(
            lambda e, main: self._robust(p, module, x, y, e, main, ctx), eps=eps, multiples=multiples, large_eps=big,
            confidence=ctx.confidence, progress=ctx.progress)
        from amulet_audit.ops.forward import predict

        clean_ok = predict(module, x) == y
        robust_main &= clean_ok
        k_clean = int(clean_ok.sum())
        metrics = {
            "clean_accuracy": rate(clean_ok, idx, confidence=ctx.confidence),
            "robust_accuracy": rate(robust_main, idx, confidence=ctx.confidence),
            "attack_success_rate": rate(~robust_main, idx, of=clean_ok, confidence=ctx.confidence,
                                        empty="no record is classified correctly before the attack"),
        }
        details = {"attack": self.name, "norm": norm, "eps": eps, **self._describe(p, ctx), **self._extra,
                   "curve": curve, "clean_accuracy": k_clean / n, "large_eps": big,
                   "input_range": list(bounds) if bounds else None, "warnings": curve_warnings(curve)}
        return AttackResult(metrics, details)


class FGSM(_Evasion):
    """Fast gradient sign method (Goodfellow et al., ICLR 2015): x' = clip(x + eps * sign(grad_x loss)) for L-inf,
    x + eps * grad / ||grad||_2 for L2. A single step: a weak, fast lower bound on vulnerability."""

    name = "fgsm"
    defaults = {"eps": 0.1, "norm": "linf", "samples": None}
    parameter_constraints = dict(_EVASION_PARAMS)

    def _robust(self, p, module, x, y, eps, main, ctx):
        return fgsm_attack(module, x, y, eps=eps, norm=p["norm"], bounds=ctx.data.input_range)

    def _describe(self, p, ctx):
        return {"steps": 1, "combined": "single gradient step per record"}


class PGD(_Evasion):
    """Projected gradient descent with random start and restarts, on holdout records.

    `step_size` defaults to 2.5 * eps / steps (Madry et al.). Records are sampled up to the profile's
    evaluation budget; restarts add the profile's extra restarts; a record is robust only if it survives all.
    """

    name = "pgd"
    defaults = {"eps": 0.1, "norm": "linf", "steps": 40, "step_size": None, "restarts": 1, "random_start": True, "samples": None}
    parameter_constraints = {
        **_EVASION_PARAMS,
        "steps": Interval(Integral, 1, 10_000),
        "step_size": OptionalOf(Interval(Real, 0, None, closed="neither")),
        "restarts": Interval(Integral, 1, 100),
        "random_start": Boolean(),
    }

    def _robust(self, p, module, x, y, eps, main, ctx):
        steps = int(p["steps"])
        # a policy step size is for the policy's eps; other budgets scale it
        step = (p["step_size"] * eps / p["eps"]) if p["step_size"] else 2.5 * eps / steps
        restarts = int(p["restarts"]) + ctx.profile.restarts if main else 1
        return pgd_attack(module, x, y, eps=eps, norm=p["norm"], steps=steps, step_size=step, restarts=restarts,
                          random_start=p["random_start"], bounds=ctx.data.input_range, seed=ctx.seed)

    def _describe(self, p, ctx):
        restarts = int(p["restarts"]) + ctx.profile.restarts
        return {"steps": int(p["steps"]), "step_size": p["step_size"] or 2.5 * p["eps"] / int(p["steps"]),
                "restarts": restarts, "combined": f"worst case per record over {restarts} restart(s) and every iterate"}


class APGD(_Evasion):
    """APGD-CE (Croce & Hein, ICML 2020): parameter-free step sizes, so no step size to tune. Each record's result
    is the worst case over the APGD restarts and a PGD run with the same budget and steps (step 2.5 * eps / steps,
    random start): a record counts as robust only if neither finds an adversarial example."""

    name = "apgd"
    defaults = {"eps": 0.1, "norm": "linf", "steps": 100, "restarts": 1, "samples": None}
    parameter_constraints = {
        **_EVASION_PARAMS,
        "steps": Interval(Integral, 1, 10_000),
        "restarts": Interval(Integral, 1, 100),
    }

    def _robust(self, p, module, x, y, eps, main, ctx):
        steps, bounds = int(p["steps"]), ctx.data.input_range
        restarts = int(p["restarts"]) + ctx.profile.restarts if main else 1
        a = apgd_attack(module, x, y, eps=eps, norm=p["norm"], steps=steps, restarts=restarts, bounds=bounds, seed=ctx.seed)
        g = pgd_attack(module, x, y, eps=eps, norm=p["norm"], steps=steps, step_size=2.5 * eps / steps, restarts=1,
                       random_start=True, bounds=bounds, seed=ctx.seed + 1)
        if main:
            self._extra = {"fooled_only_by_apgd": int((~a & g).sum()), "fooled_only_by_pgd": int((a & ~g).sum())}
        return a & g

    def _describe(self, p, ctx):
        restarts = int(p["restarts"]) + ctx.profile.restarts
        return {"steps": int(p["steps"]), "restarts": restarts, "rho": 0.75, "momentum": 0.75,
                "checkpoints": apgd_checkpoints(int(p["steps"])),
                "combined": f"worst case per record over {restarts} APGD-CE restart(s) and one PGD run "
                            f"({int(p['steps'])} steps, step 2.5*eps/steps, random start)"}
