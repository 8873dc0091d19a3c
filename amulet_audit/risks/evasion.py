"""Evasion: projected gradient descent (Madry et al., ICLR 2018) under L-inf and L2 budgets."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from amulet_audit.risks.base import Attack, AttackContext, AttackResult, Measurement, MetricSpec
from amulet_audit.risks.params import Interval, OptionalOf, Options
from amulet_audit.stats import binomial_ci

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


def pgd_attack(module, x, y, *, eps: float, norm: str, steps: int, step_size: float, restarts: int,
               random_start: bool, bounds: tuple[float, float] | None, seed: int, batch_size: int = 512) -> np.ndarray:
    """Untargeted PGD on cross-entropy. Returns a boolean array: True where the record stays correctly
    classified under every restart (worst case over restarts)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    robust = np.ones(len(x), dtype=bool)
    for start in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[start:start + batch_size], dtype=torch.float32)
        yb = torch.as_tensor(y[start:start + batch_size], dtype=torch.long)
        with torch.no_grad():
            ok = module(xb).argmax(1) == yb
        for _ in range(restarts):
            if not ok.any() or eps == 0:
                break
            delta = _random_delta(xb, eps, norm, gen) if random_start else torch.zeros_like(xb)
            adv = _project(xb, xb + delta, eps, norm, bounds)
            for _ in range(steps):
                adv.requires_grad_(True)
                loss = F.cross_entropy(module(adv), yb, reduction="sum")
                (grad,) = torch.autograd.grad(loss, adv)
                with torch.no_grad():
                    if norm == "linf":
                        step = grad.sign()
                    else:
                        flat = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
                        step = grad / flat.view(-1, *([1] * (grad.dim() - 1)))
                    adv = _project(xb, adv.detach() + step_size * step, eps, norm, bounds)
            with torch.no_grad():
                ok &= module(adv).argmax(1) == yb
        robust[start:start + batch_size] = ok.numpy()
    return robust


def _random_delta(x, eps: float, norm: str, gen):
    import torch

    if norm == "linf":
        return (torch.rand(x.shape, generator=gen) * 2 - 1) * eps
    direction = torch.randn(x.shape, generator=gen)
    direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
    radius = torch.rand(len(x), generator=gen).view(-1, *([1] * (x.dim() - 1))) * eps
    return direction * radius


def _project(x, adv, eps: float, norm: str, bounds):
    import torch

    delta = adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
        delta = delta * (eps / n).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
    adv = x + delta
    if bounds is not None:
        adv = adv.clamp(bounds[0], bounds[1])
    return adv


class PGD(Attack):
    """Projected gradient descent with random start and restarts, on holdout records.

    `step_size` defaults to 2.5 * eps / steps (Madry et al.). Records are sampled up to the profile's
    evaluation budget; restarts add the profile's extra restarts; a record is robust only if it survives all.
    """

    name = "pgd"
    risk = "evasion"
    metrics = ("clean_accuracy", "robust_accuracy", "attack_success_rate")
    needs = frozenset({"gradients"})
    defaults = {"eps": 0.1, "norm": "linf", "steps": 40, "step_size": None, "restarts": 1, "random_start": True, "samples": None}
    parameter_constraints = {
        "eps": Interval(Real, 0, None, closed="neither"),
        "norm": Options(frozenset({"linf", "l2"})),
        "steps": Interval(Integral, 1, 10_000),
        "step_size": OptionalOf(Interval(Real, 0, None, closed="neither")),
        "restarts": Interval(Integral, 1, 100),
        "random_start": Options(frozenset({True, False})),
        "samples": OptionalOf(Interval(Integral, 1, None)),
    }

    def run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data, module = ctx.data, ctx.model.module
        rng = np.random.default_rng(ctx.seed)
        n = min(len(data.x_holdout), p["samples"] or ctx.profile.eval_samples)
        idx = np.sort(rng.choice(len(data.x_holdout), n, replace=False))
        x, y = data.x_holdout[idx], data.y_holdout[idx]
        eps, steps = float(p["eps"]), int(p["steps"])
        bounds = data.input_range

        def robust_at(e: float, restarts: int) -> np.ndarray:
            return pgd_attack(module, x, y, eps=e, norm=p["norm"], steps=steps,
                              step_size=p["step_size"] or 2.5 * e / steps, restarts=restarts,
                              random_start=p["random_start"], bounds=bounds, seed=ctx.seed)

        multiples = _CURVE.get(ctx.profile.curve_points, _CURVE[6])
        curve, robust_main = [], None
        for i, m in enumerate(multiples):
            e = eps * m
            ok = robust_at(e, int(p["restarts"]) + ctx.profile.restarts if m == 1 else 1)
            if m == 1:
                robust_main = ok
            k = int(ok.sum())
            curve.append({"eps": e, "robust_accuracy": k / n, "ci": list(binomial_ci(k, n, ctx.confidence)), "n": n})
            if ctx.progress:
                ctx.progress((i + 1) / len(multiples))
        clean_ok = robust_at(0.0, 1)
        k_clean, k_rob = int(clean_ok.sum()), int(robust_main.sum())
        n_correct = k_clean
        k_success = int((clean_ok & ~robust_main).sum())
        warnings = _curve_warnings(curve)
        metrics = {
            "clean_accuracy": Measurement(k_clean / n, binomial_ci(k_clean, n, ctx.confidence), n),
            "robust_accuracy": Measurement(k_rob / n, binomial_ci(k_rob, n, ctx.confidence), n),
            "attack_success_rate": (
                Measurement(k_success / n_correct, binomial_ci(k_success, n_correct, ctx.confidence), n_correct)
                if n_correct else Measurement(None, None, 0, "no record is classified correctly before the attack")
            ),
        }
        details = {"norm": p["norm"], "eps": eps, "steps": steps, "step_size": p["step_size"] or 2.5 * eps / steps,
                   "restarts": int(p["restarts"]) + ctx.profile.restarts, "curve": curve, "clean_accuracy": k_clean / n,
                   "input_range": list(bounds) if bounds else None, "warnings": warnings}
        return AttackResult(metrics, details)


def _curve_warnings(curve: list[dict]) -> list[str]:
    """Signs of gradient masking: robust accuracy must not rise with epsilon beyond its interval."""
    out = []
    for a, b in zip(curve, curve[1:]):
        if b["robust_accuracy"] > a["ci"][1]:
            out.append(
                f"Robust accuracy rose from {a['robust_accuracy']:.3f} at eps={a['eps']:g} to {b['robust_accuracy']:.3f} at "
                f"eps={b['eps']:g}: a sign of gradient masking; treat the robust accuracy as an upper bound."
            )
    return out
