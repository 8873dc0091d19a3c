"""Evasion: adversarial examples within an L-inf or L2 budget, on the model's real input range.

Three attacks share one evaluation (sampling, robustness curve, metrics, gradient-masking checks, units):
- `fgsm`: the fast gradient sign method (Goodfellow, Shlens & Szegedy, ICLR 2015), one step of size eps;
- `pgd`: projected gradient descent with random start (Madry et al., ICLR 2018) on cross-entropy (falling back,
  per record, to the margin loss where float32 cannot resolve the cross-entropy gradient) or on the
  Carlini-Wagner margin loss;
- `apgd`: an ensemble in the manner of AutoAttack (Croce & Hein, "Reliable evaluation of adversarial robustness
  with an ensemble of diverse parameter-free attacks", ICML 2020): APGD on cross-entropy, APGD on the
  scale-invariant DLR loss, targeted APGD-DLR towards the most likely other classes (more than two classes), a
  PGD run, and the score-based, gradient-free Square attack (Andriushchenko et al., ECCV 2020); a record
  is robust only if none of them fooled it.

Budgets are in the data's units (`scale: absolute`) or relative to each feature's holdout range or standard
deviation (`scale: range | std`). A value the audit itself marks as an upper bound (a gradient-masking check, or
a budget whose units say little) carries `bound="upper"`, which keeps a PASS from being declared.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from numbers import Integral, Real
from typing import Any

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec, rate
from amulet_audit.core.component import unmet_need
from amulet_audit.core.mode import set_mode
from amulet_audit.core.params import Boolean, Interval, OptionalOf, Options
from amulet_audit.core.stats import binomial_ci
from amulet_audit.ops.perturb import direction, loss_grad, margin, pgd_steps, project, random_delta, view

CLEAN_ACCURACY = MetricSpec("clean_accuracy", "Accuracy on unperturbed holdout records.", higher_is_worse=False, kind="rate",
                           unit="fraction")
ROBUST_ACCURACY = MetricSpec(
    "robust_accuracy", "Share of holdout records classified correctly under the worst perturbation found within the budget.",
    higher_is_worse=False, kind="rate", unit="fraction",
)
ATTACK_SUCCESS_RATE = MetricSpec(
    "attack_success_rate", "Share of attacked records on which the attack reaches its goal.", higher_is_worse=True, kind="rate",
    unit="fraction",
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

    The loss is cross-entropy, with the per-record margin fall-back where float32 cannot resolve its gradient
    (`ops.perturb.loss_grad`). Returns a boolean array: True where the record stays correctly classified."""
    robust = np.ones(len(x), dtype=bool)
    for start, xb, yb in _batches(x, y, batch_size):
        ok = _clean_correct(module, xb, yb)
        if ok.any() and eps > 0:
            _, grad, _ = loss_grad(module, xb, yb, fallback=True)
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
               random_start: bool, bounds, seed: int, loss: str = "ce", batch_size: int = BATCH) -> np.ndarray:
    """Untargeted PGD (Madry et al. 2018); `eps` and `step_size` in input units; `bounds` (low, high), floats or
    per-feature tensors, or None. `loss`: "ce" (cross-entropy, with the per-record margin fall-back of
    `ops.perturb.loss_grad` where it underflows) or "margin" (Carlini & Wagner 2017). Returns a boolean array:
    True where the record stays correctly classified under every restart and every iterate (worst case)."""
    import torch

    gen = torch.Generator().manual_seed(seed)

    def run(xa, ya):
        delta = random_delta(xa, eps, norm, gen) if random_start else torch.zeros_like(xa)
        adv, fooled = pgd_steps(module, xa, ya, project(xa, xa + delta, eps, norm, bounds), eps=eps, norm=norm,
                                steps=steps, step_size=step_size, bounds=bounds, loss=loss, fallback=True)
        return fooled | ~_clean_correct(module, adv, ya)

    return _worst_case(module, x, y, restarts=restarts, eps=eps, batch_size=batch_size, run=run)


def apgd_checkpoints(steps: int) -> list[int]:
    """Iterations at which APGD may halve its step: w_j = ceil(p_j * steps) with p_0 = 0, p_1 = 0.22,
    p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06) (Croce & Hein 2020, §3.2)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(round(q * steps, 6)) for q in p if 0 < q <= 1})


def apgd_attack(module, x, y, *, eps: float, norm: str, steps: int, restarts: int, bounds, seed: int,
                loss: str = "ce", target_rank: int = 0, rho: float = 0.75, alpha: float = 0.75,
                batch_size: int = BATCH) -> np.ndarray:
    """APGD (Croce & Hein, ICML 2020, Algorithm 1) on `loss` ("ce", "dlr" or "margin"; "dlr_targeted" with
    `target_rank` r >= 1: towards each record's r-th most likely other class at the clean input); `eps` in input
    units, `bounds` as for `pgd_attack`.

    Step size starts at 2*eps; at each checkpoint w_j it is halved for a record (and the iterate restarts from
    that record's best point) when the loss rose in fewer than `rho` of the steps since w_{j-1} (condition 1), or
    when the step was not halved at w_{j-1} and the best loss has not improved since (condition 2). Steps use
    momentum `alpha`: x_{k+1} = P(x_k + alpha (z_{k+1} - x_k) + (1 - alpha)(x_k - x_{k-1})).
    Returns a boolean array: True where no iterate of any restart misclassifies the record."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    checkpoints = set(apgd_checkpoints(steps))

    def run(xa, ya):
        target = _ranked_class(module, xa, ya, target_rank) if loss == "dlr_targeted" else None
        x0 = project(xa, xa + random_delta(xa, eps, norm, gen), eps, norm, bounds)
        return _apgd_run(module, xa, ya, x0, eps=eps, norm=norm, steps=steps, bounds=bounds,
                         checkpoints=checkpoints, rho=rho, alpha=alpha, loss=loss, target=target)

    return _worst_case(module, x, y, restarts=restarts, eps=eps, batch_size=batch_size, run=run)


def _ranked_class(module, x, y, rank: int):
    """Per record (n,) the class with the `rank`-th highest score (1: the most likely) among those other than `y`."""
    import torch

    with torch.no_grad():
        scores = module(x)
    scores = scores.masked_fill(torch.nn.functional.one_hot(y, scores.shape[1]).bool(), float("-inf"))
    return scores.argsort(dim=1, descending=True)[:, rank - 1]


def _apgd_run(module, x, y, x0, *, eps, norm, steps, bounds, checkpoints, rho, alpha, loss="ce", target=None):
    """One APGD run on `loss` from `x0`; returns, per record, whether some iterate was misclassified."""
    import torch

    n = len(x)
    eta = torch.full((n,), 2.0 * eps)
    cur = x0
    f, g, fooled = loss_grad(module, cur, y, loss, target=target)
    prev = cur.clone()
    best_x, best_g, best_f = cur.clone(), g.clone(), f.clone()
    best_f_last = best_f.clone()
    reduced_last = torch.zeros(n, dtype=torch.bool)
    rises = torch.zeros(n)
    last = 0
    for k in range(steps):
        z = project(x, cur + view(eta, cur) * direction(g, norm), eps, norm, bounds)
        new = z if k == 0 else project(x, cur + alpha * (z - cur) + (1 - alpha) * (cur - prev), eps, norm, bounds)
        f_new, g_new, wrong = loss_grad(module, new, y, loss, target=target)
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


# The Square attack halves its window after these iterations of a 10,000-query run (Andriushchenko et al. 2020,
# §3.1 and App. "p schedule"); other budgets rescale them.
_SQUARE_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(i: int, queries: int, p_init: float) -> float:
    """The share p of the input a Square proposal changes at iteration `i` of `queries`: `p_init`, halved at each
    of `_SQUARE_HALVINGS` (given for 10,000 queries, rescaled to `queries`) that `i` has passed."""
    i = int(i * 10_000 / max(queries, 1))
    return p_init / 2 ** sum(i > h for h in _SQUARE_HALVINGS)


def square_attack(module, x, y, *, eps: float, norm: str, queries: int, bounds, seed: int, p_init: float = 0.05,
                  batch_size: int = BATCH) -> np.ndarray:
    """The Square attack (Andriushchenko, Croce, Flammarion & Hein, "Square Attack: a query-efficient
    black-box adversarial attack via random search", ECCV 2020, Algorithm 1): random search on the margin loss
    z_y - max_{j != y} z_j of the model's scores, using forward passes only, so gradient masking cannot stop it.

    Start from a perturbation of +-eps in every coordinate (image inputs (n, C, H, W): vertical stripes, one sign
    per channel and column). Each of the other `queries - 1` iterations proposes, per record, to set a window to
    +-eps (images: a square of side round(sqrt(p * H * W)) with one sign per channel; other inputs, where
    neighbouring coordinates mean nothing: round(p * d) random coordinates, each its own sign), where p follows
    `square_fraction`; a proposal that changes nothing is flipped. It is kept when it lowers the margin; a record
    stops once misclassified. `eps` in input units; `bounds` as for `pgd_attack`.

    L2 (the paper's §3.2 scheme, on coordinate windows for every input shape): start from a random point of the
    eps-sphere; each proposal takes two disjoint windows of round(p * d) coordinates, empties the second and gives
    its mass to the first in a new random direction (the mass of the two windows is kept, so the perturbation stays
    on the sphere before clipping to `bounds`).

    Returns a boolean array (n,): True where the record is classified correctly and no query misclassified it.
    Raises ValueError for a norm other than "linf" or "l2"."""
    import torch

    if norm not in ("linf", "l2"):
        raise ValueError(f"unknown norm {norm!r}; linf or l2")
    gen = torch.Generator().manual_seed(seed)
    robust = np.ones(len(x), dtype=bool)
    for start, xb, yb in _batches(x, y, batch_size):
        ok = _clean_correct(module, xb, yb)
        if ok.any() and eps > 0 and queries > 0:
            live = ok.nonzero().squeeze(1)
            run = _square_run if norm == "linf" else _square_l2_run
            ok[live] = ~run(module, xb[live], yb[live], eps=eps, queries=queries, bounds=bounds, gen=gen, p_init=p_init)
        robust[start:start + len(xb)] = ok.numpy()
    return robust


def _sign(shape, gen):
    import torch

    return torch.randint(0, 2, shape, generator=gen).float() * 2 - 1


def _square_search(module, x, y, adv, *, eps, norm, queries, bounds, propose):
    """Square's greedy random search (Andriushchenko et al., ECCV 2020) from the starting points `adv`: each query
    asks `propose(i, delta)` for a new perturbation of the records still standing (delta: their current
    perturbations), projects it onto the `norm` ball and the input range, and keeps it where it lowers the margin.
    Returns, per record, whether some query misclassified it."""
    import torch

    with torch.no_grad():
        out = module(adv)
    m, fooled = margin(out, y), out.argmax(1) != y
    for i in range(queries - 1):
        active = (~fooled).nonzero().squeeze(1)
        if len(active) == 0:
            break
        xa = x[active]
        cand = project(xa, xa + propose(i, (adv - x)[active]).view_as(xa), eps, norm, bounds)
        with torch.no_grad():
            out = module(cand)
        m_new, wrong = margin(out, y[active]), out.argmax(1) != y[active]
        better = m_new < m[active]
        adv[active[better]], m[active[better]] = cand[better], m_new[better]
        fooled[active[wrong]] = True
    return fooled


def _square_run(module, x, y, *, eps, queries, bounds, gen, p_init):
    """One L-inf Square run on correctly classified records: squares of the image (random coordinates otherwise)
    set to a vertex of the ball; returns, per record, whether some query misclassified it."""
    import torch

    n = len(x)
    image = x.dim() == 4
    if image:
        c, h, w = x.shape[1:]
        start = _sign((n, c, 1, w), gen).expand(-1, -1, h, -1)
    else:
        start = _sign(x.shape, gen)

    def propose(i, delta):
        p, k = square_fraction(i, queries, p_init), len(delta)
        if image:
            side = max(1, min(h, w, round(math.sqrt(p * h * w))))
            rows = torch.randint(0, h - side + 1, (k, 1, 1, 1), generator=gen)
            cols = torch.randint(0, w - side + 1, (k, 1, 1, 1), generator=gen)
            ih, iw = torch.arange(h).view(1, 1, h, 1), torch.arange(w).view(1, 1, 1, w)
            window = (ih >= rows) & (ih < rows + side) & (iw >= cols) & (iw < cols + side)
            signs = _sign((k, c, 1, 1), gen)
            same = ((delta - eps * signs).abs() * window).flatten(1).sum(1) == 0
            signs[same] = -signs[same]
            return torch.where(window, eps * signs, delta)
        flat = delta.flatten(1).clone()
        d = flat.shape[1]
        chosen = torch.rand(k, d, generator=gen).argsort(1)[:, :max(1, round(p * d))]
        values = eps * _sign(chosen.shape, gen)
        same = (flat.gather(1, chosen) == values).all(1)
        values[same] = -values[same]
        return flat.scatter(1, chosen, values)

    return _square_search(module, x, y, project(x, x + eps * start, eps, "linf", bounds), eps=eps, norm="linf",
                          queries=queries, bounds=bounds, propose=propose)


def _square_l2_run(module, x, y, *, eps, queries, bounds, gen, p_init):
    """One L2 Square run (see `square_attack`): mass moved between two random coordinate windows on the sphere;
    returns, per record, whether some query misclassified it."""
    import torch

    d = int(np.prod(x.shape[1:]))
    start = torch.randn(x.shape, generator=gen)

    def propose(i, delta):
        delta, k = delta.flatten(1), len(delta)
        if d < 2:  # one coordinate: the only other point of the sphere
            return -delta
        h = max(1, min(d // 2, round(square_fraction(i, queries, p_init) * d)))
        order = torch.rand(k, d, generator=gen).argsort(1)
        w1, w2 = order[:, :h], order[:, h:2 * h]
        mass = (delta.gather(1, w1).square().sum(1) + delta.gather(1, w2).square().sum(1)).sqrt()
        direction_ = delta.gather(1, w1) + torch.randn(k, h, generator=gen) * view(mass / math.sqrt(h), delta)
        direction_ = direction_ / direction_.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return delta.scatter(1, w2, torch.zeros(k, h)).scatter(1, w1, direction_ * mass[:, None])

    adv = project(x, x + eps * start / view(start.flatten(1).norm(dim=1).clamp_min(1e-12), x), eps, "l2", bounds)
    return _square_search(module, x, y, adv, eps=eps, norm="l2", queries=queries, bounds=bounds, propose=propose)


# --- the shared evaluation ----------------------------------------------------------------------


def large_epsilon(eps: float, norm: str, bounds, x: np.ndarray) -> float:
    """A budget so large that a working attack must fool nearly every record: the whole input range when it is
    known (L-inf: its width, the widest feature's when `bounds` are per feature; L2: width * sqrt(dimension)), else
    10x the policy's eps and at least 4 per-feature standard deviations (times sqrt(dimension) for L2)."""
    d = int(np.prod(x.shape[1:]))
    scale = 1.0 if norm == "linf" else math.sqrt(d)
    if bounds is not None:
        width = np.asarray(bounds[1], dtype=float) - np.asarray(bounds[0], dtype=float)
        width = width[np.isfinite(width)]
        if width.size and width.max() > 0:
            return float(width.max() * scale)
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
    "scale": Options(frozenset({"absolute", "range", "std"})),
}
# A budget below this share of the median feature range, or feature ranges further apart than this ratio, make an
# absolute budget say little (the data's units, not the model, decide the result).
SMALL_BUDGET = 0.01
RANGE_RATIO = 100.0


def feature_spread(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per feature of `x` (n, *shape), flattened to (d,): holdout range (max - min), standard deviation and median,
    float64, in the data's units."""
    flat = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return flat.max(0) - flat.min(0), flat.std(0), np.median(flat, 0)


def rescaled(module, x: np.ndarray, bounds, spread: np.ndarray, center: np.ndarray):
    """The attack problem in units of `spread` (per feature, shape (d,)): returns (module', x', bounds') with
    x' = (x - center) / spread, module'(x') = module(x' * spread + center), so that an eps-ball in x' is the ball
    of eps * spread_i per feature in x. `bounds` (the data's input_range or None) become per-feature tensors;
    a feature with zero spread (constant on the holdout) is held at its value (bounds [0, 0])."""
    import torch

    shape = x.shape[1:]
    frozen = spread <= 0
    s = np.where(frozen, 1.0, spread)
    x_n = ((np.asarray(x, dtype=np.float64).reshape(len(x), -1) - center) / s).reshape(x.shape).astype(np.float32)
    lo = np.full(s.shape, -np.inf) if bounds is None else (bounds[0] - center) / s
    hi = np.full(s.shape, np.inf) if bounds is None else (bounds[1] - center) / s
    lo[frozen], hi[frozen] = 0.0, 0.0
    as_t = lambda a: torch.as_tensor(a.reshape(shape), dtype=torch.float32)  # noqa: E731

    class Rescaled(torch.nn.Module):
        """The audited model read in units of each feature's spread."""

        def __init__(self):
            super().__init__()
            self.inner = module
            self.register_buffer("s", as_t(s))
            self.register_buffer("c", as_t(center))

        def forward(self, z):
            return self.inner(z * self.s + self.c)

    return set_mode(Rescaled(), False), x_n, (as_t(lo), as_t(hi))  # `module` may be an exported graph (fixed mode)


def unit_warnings(eps: float, ranges: np.ndarray) -> list[str]:
    """Warnings for an absolute budget `eps` on data without a declared input_range, given each feature's holdout
    range: a budget below `SMALL_BUDGET` of the median range, or ranges (of non-constant features) that differ by
    more than `RANGE_RATIO`."""
    ranges = ranges[ranges > 0]
    if not ranges.size:
        return []
    out, med = [], float(np.median(ranges))
    if eps < SMALL_BUDGET * med:
        out.append(f"The budget eps={eps:g} is absolute and only {eps / med:.2%} of the median feature range "
                   f"({med:.4g}) on the holdout: in these units the attack may move no feature noticeably; state "
                   "the budget relative to the data (scale: range or std) or declare input_range in the data spec.")
    if ranges.max() > RANGE_RATIO * ranges.min():
        out.append(f"Feature ranges on the holdout differ by {ranges.max() / ranges.min():.0f}x ({ranges.min():.4g} "
                   f"to {ranges.max():.4g}) and the budget eps={eps:g} is absolute: it is large for some features and "
                   "negligible for others; state it relative to the data (scale: range or std).")
    return out


class _Evasion(Attack):
    """Shared evaluation: records sampled from the holdout up to the profile's budget, the attack run at each
    curve epsilon, metrics at the policy's epsilon with exact binomial intervals."""

    risk = "evasion"
    metrics = ("clean_accuracy", "robust_accuracy", "attack_success_rate")
    # gradients: checked in `_run`, so that a label-only model's clean accuracy is still measured
    needs = frozenset()
    gradient_free = False  # True: the attack reads predicted labels or scores only (runs without gradients)

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
        missing = "" if self.gradient_free else self.with_alternative(unmet_need({"gradients"}, ctx.model, data),
                                                                      ctx.model)
        if missing:  # e.g. a label-only model: predictions give the clean accuracy, nothing gives a gradient
            from amulet_audit.ops.forward import predict

            clean_ok = predict(module, x) == y
            return AttackResult({
                "clean_accuracy": rate(clean_ok, idx, confidence=ctx.confidence),
                "robust_accuracy": Measurement(None, None, 0, missing),
                "attack_success_rate": Measurement(None, None, 0, missing),
            }, {"attack": self.name, "norm": norm, "eps": eps, "clean_accuracy": float(clean_ok.mean()),
                "not_measured": f"robust accuracy and attack success rate: {missing}"})

        scale = p.get("scale", "absolute")
        ranges, stds, center = feature_spread(data.x_holdout)
        unit_notes = unit_warnings(eps, ranges) if scale == "absolute" and bounds is None else []
        spread = {"range": ranges, "std": stds}.get(scale)
        module_a, x_a, self._bounds = (module, x, bounds) if spread is None else rescaled(module, x, bounds, spread, center)
        multiples = _CURVE.get(ctx.profile.curve_points, _CURVE[6])
        big = large_epsilon(eps, norm, self._bounds, x_a)
        curve, robust_main = robustness_curve(
            lambda e, main: self._robust(p, module_a, x_a, y, e, main, ctx), eps=eps, multiples=multiples,
            large_eps=big, confidence=ctx.confidence, progress=ctx.progress)
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
        warnings = curve_warnings(curve) + unit_notes
        if warnings:  # the attack may have missed adversarial examples, or its budget says little: never a PASS
            why = " ".join(warnings)
            for name, side in (("robust_accuracy", "upper"), ("attack_success_rate", "lower")):
                if metrics[name].value is not None:
                    metrics[name].bound, metrics[name].bound_reason = side, why
        details = {"attack": self.name, "norm": norm, "eps": eps, **self._describe(p, ctx), **self._extra,
                   "curve": curve, "clean_accuracy": k_clean / n, "large_eps": big,
                   "input_range": list(bounds) if bounds else None, "warnings": warnings,
                   **_units(eps, scale, ranges, stds, bounds)}
        return AttackResult(metrics, details)


def _units(eps: float, scale: str, ranges: np.ndarray, stds: np.ndarray, bounds) -> dict[str, Any]:
    """The budget's units for the evidence: `scale`, and, when the data spec declares no input_range, the budget
    as a share of each (non-constant) feature's holdout range: median, min and max over features."""
    out: dict[str, Any] = {"scale": scale}
    if scale != "absolute":
        out["eps_units"] = f"multiples of each feature's holdout {'range' if scale == 'range' else 'standard deviation'}"
    else:
        out["eps_units"] = "the data's units" + (" (input_range declared)" if bounds is not None else "")
    keep = ranges > 0
    if bounds is None and keep.any():
        per_feature = {"absolute": np.full(keep.sum(), eps), "range": eps * ranges[keep],
                       "std": eps * stds[keep]}[scale] / ranges[keep]
        out["budget_relative_to_range"] = {"median": float(np.median(per_feature)), "min": float(per_feature.min()),
                                           "max": float(per_feature.max()), "features": int(keep.sum())}
    return out


class FGSM(_Evasion):
    """Fast gradient sign method (Goodfellow et al., ICLR 2015): x' = clip(x + eps * sign(grad_x loss)) for L-inf,
    x + eps * grad / ||grad||_2 for L2. A single step: a weak, fast lower bound on vulnerability."""

    name = "fgsm"
    defaults = {"eps": 0.1, "norm": "linf", "samples": None, "scale": "absolute"}
    parameter_constraints = dict(_EVASION_PARAMS)

    def _robust(self, p, module, x, y, eps, main, ctx):
        return fgsm_attack(module, x, y, eps=eps, norm=p["norm"], bounds=self._bounds)

    def _describe(self, p, ctx):
        return {"steps": 1, "combined": "single gradient step per record"}


class PGD(_Evasion):
    """Projected gradient descent with random start and restarts, on holdout records.

    `step_size` defaults to 2.5 * eps / steps (Madry et al.). `loss`: "ce" (cross-entropy; where float32 cannot
    resolve its gradient, as on a very confident model, the record's step follows the margin loss instead) or
    "margin" (the Carlini-Wagner margin, scale-invariant in the direction it steps). Records are sampled up to the
    profile's evaluation budget; restarts add the profile's extra restarts; a record is robust only if it survives
    all.
    """

    name = "pgd"
    defaults = {"eps": 0.1, "norm": "linf", "steps": 40, "step_size": None, "restarts": 1, "random_start": True,
                "samples": None, "scale": "absolute", "loss": "ce"}
    parameter_constraints = {
        **_EVASION_PARAMS,
        "steps": Interval(Integral, 1, 10_000),
        "step_size": OptionalOf(Interval(Real, 0, None, closed="neither")),
        "restarts": Interval(Integral, 1, 100),
        "random_start": Boolean(),
        "loss": Options(frozenset({"ce", "margin"})),
    }

    def _robust(self, p, module, x, y, eps, main, ctx):
        steps = int(p["steps"])
        # a policy step size is for the policy's eps; other budgets scale it
        step = (p["step_size"] * eps / p["eps"]) if p["step_size"] else 2.5 * eps / steps
        restarts = int(p["restarts"]) + ctx.profile.restarts if main else 1
        return pgd_attack(module, x, y, eps=eps, norm=p["norm"], steps=steps, step_size=step, restarts=restarts,
                          random_start=p["random_start"], bounds=self._bounds, seed=ctx.seed, loss=p["loss"])

    def _describe(self, p, ctx):
        restarts = int(p["restarts"]) + ctx.profile.restarts
        loss = ("cross-entropy (margin loss where its float32 gradient underflows)" if p["loss"] == "ce"
                else "Carlini-Wagner margin")
        return {"steps": int(p["steps"]), "step_size": p["step_size"] or 2.5 * p["eps"] / int(p["steps"]),
                "restarts": restarts, "loss": loss,
                "combined": f"worst case per record over {restarts} restart(s) and every iterate"}


class APGD(_Evasion):
    """An AutoAttack-style ensemble (Croce & Hein, ICML 2020): APGD-CE, APGD-DLR (the scale-invariant difference
    of logits ratio; with two classes the margin loss), targeted APGD-DLR towards each of the profile's `targets`
    most likely other classes (more than two classes), one PGD run (cross-entropy with the margin fall-back, step
    2.5 * eps / steps, random start), and the gradient-free Square attack (Andriushchenko et al., ECCV 2020) with
    the profile's query budget. Each attack runs on the records the earlier ones left standing; a
    record counts as robust only if none fooled it. APGD needs no step size."""

    name = "apgd"
    defaults = {"eps": 0.1, "norm": "linf", "steps": 100, "restarts": 1, "samples": None, "scale": "absolute",
                "square": True}
    parameter_constraints = {
        **_EVASION_PARAMS,
        "steps": Interval(Integral, 1, 10_000),
        "restarts": Interval(Integral, 1, 100),
        "square": Boolean(),
    }
    # AutoAttack's standard version: 9 target classes, 5,000 Square queries (thorough here); the Square attack's
    # cost grows with queries x records that survive the gradient attacks, so lighter profiles query less
    budgets = {"quick": {"targets": 3, "square_queries": 1000},
               "standard": {"targets": 9, "square_queries": 2500},
               "thorough": {"targets": 9, "square_queries": 5000}}

    def _stages(self, p, ctx, n_classes: int):
        """(name, run(module, x, y, eps, restarts) -> robust per record) in the order they are tried."""
        steps, norm, bounds, seed = int(p["steps"]), p["norm"], self._bounds, ctx.seed

        def apgd(loss, rank=0):
            return lambda m, x, y, eps, r: apgd_attack(m, x, y, eps=eps, norm=norm, steps=steps, restarts=r,
                                                       bounds=bounds, seed=seed + rank, loss=loss, target_rank=rank)

        stages = [("apgd-ce", apgd("ce")), ("apgd-dlr", apgd("dlr"))]
        if n_classes > 2:
            stages += [(f"apgd-t-dlr-{k}", apgd("dlr_targeted", k))
                       for k in range(1, min(self.budget(ctx.profile, "targets"), n_classes - 1) + 1)]
        stages.append(("pgd", lambda m, x, y, eps, r: pgd_attack(
            m, x, y, eps=eps, norm=norm, steps=steps, step_size=2.5 * eps / steps, restarts=1, random_start=True,
            bounds=bounds, seed=seed + 1)))
        if p["square"]:
            queries = int(self.budget(ctx.profile, "square_queries"))
            stages.append(("square", lambda m, x, y, eps, r: square_attack(
                m, x, y, eps=eps, norm=norm, queries=queries, bounds=bounds, seed=seed + 2)))
        return stages

    def _robust(self, p, module, x, y, eps, main, ctx):
        restarts = int(p["restarts"]) + ctx.profile.restarts if main else 1
        robust = _clean_correct_np(module, x, y)
        first: dict[str, int] = {}
        for name, run in self._stages(p, ctx, _n_classes(module, x, ctx)):
            live = np.flatnonzero(robust)
            if not live.size:
                break
            ok = run(module, x[live], y[live], eps, restarts)
            first[name] = int((~ok).sum())
            robust[live[~ok]] = False
        if main:
            self._extra = {"fooled_first_by": first}
        return robust

    def _describe(self, p, ctx):
        restarts = int(p["restarts"]) + ctx.profile.restarts
        names = [name for name, _ in self._stages(p, ctx, int(getattr(ctx.data, "n_classes", 0) or 0))]
        square = "" if "square" in names else " (no Square attack: square: false)"
        return {"steps": int(p["steps"]), "restarts": restarts, "rho": 0.75, "momentum": 0.75,
                "checkpoints": apgd_checkpoints(int(p["steps"])), "attacks": names,
                "square_queries": self.budget(ctx.profile, "square_queries") if "square" in names else 0,
                "combined": f"worst case per record over {', '.join(names)}: {restarts} restart(s) for each APGD "
                            f"loss at the policy's eps, one PGD run ({int(p['steps'])} steps, step 2.5*eps/steps, "
                            f"random start){square}"}


class Square(_Evasion):
    """The Square attack on its own (Andriushchenko, Croce, Flammarion & Hein, ECCV 2020; `square_attack`): a
    score-based random search that reads the model's per-class scores only, never a gradient, so it measures robust
    accuracy for models that offer scores but no gradients (ONNX models run with onnxruntime, a model behind a
    prediction service) and cannot be stopped by gradient masking. `queries`: the iterations per record at each
    curve epsilon (one query each; None: the profile's budget); `p_init`: the share of the input the first
    proposals change (the paper's 0.05 for L-inf)."""

    name = "square"
    gradient_free = True
    needs = frozenset({"scores"})
    defaults = {"eps": 0.1, "norm": "linf", "samples": None, "scale": "absolute", "queries": None, "p_init": 0.05}
    parameter_constraints = {
        **_EVASION_PARAMS,
        "queries": OptionalOf(Interval(Integral, 1, None)),
        "p_init": Interval(Real, 0, 1, closed="right"),
    }
    # as APGD's Square stage: AutoAttack's 5,000 queries in the thorough profile, fewer in lighter ones
    budgets = {"quick": {"queries": 1000}, "standard": {"queries": 2500}, "thorough": {"queries": 5000}}

    def _queries(self, p, ctx) -> int:
        return int(p["queries"] or self.budget(ctx.profile, "queries"))

    def _robust(self, p, module, x, y, eps, main, ctx):
        return square_attack(module, x, y, eps=eps, norm=p["norm"], queries=self._queries(p, ctx),
                             bounds=self._bounds, seed=ctx.seed, p_init=float(p["p_init"]))

    def _describe(self, p, ctx):
        return {"queries": self._queries(p, ctx), "p_init": float(p["p_init"]), "access": "per-class scores only",
                "combined": "one Square random search per record and curve epsilon; a record is robust at eps when "
                            "no query within eps misclassified it"}


def _clean_correct_np(module, x, y) -> np.ndarray:
    out = np.zeros(len(x), dtype=bool)
    for start, xb, yb in _batches(x, y, BATCH):
        out[start:start + len(xb)] = _clean_correct(module, xb, yb).numpy()
    return out


def _n_classes(module, x, ctx) -> int:
    """The number of classes: the data's, else the width of the model's scores."""
    import torch

    k = getattr(ctx.data, "n_classes", None)
    if k:
        return int(k)
    with torch.no_grad():
        return int(module(torch.as_tensor(x[:1], dtype=torch.float32)).shape[1])
