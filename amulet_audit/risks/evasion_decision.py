"""Evasion from predicted labels alone: HopSkipJump (Chen, Jordan & Wainwright, "HopSkipJumpAttack: A
Query-Efficient Decision-Based Attack", IEEE S&P 2020).

The attack sees only the model's top label (`ops.forward.predict`), so it applies to a label-only model (output
convention `labels`), and neither gradient masking nor saturated scores can stop it. From an adversarial starting
point it walks along the decision boundary towards the record: a binary search to the boundary, an estimate of the
boundary's normal from the signs of queries around the boundary point (Monte-Carlo, with the paper's probe radius
delta_t and sample sizes B_t = B_0 * sqrt(t)), then a geometric search for the step along that estimate. It minimises
the distance to the nearest adversarial example it can find, so one run gives the robust accuracy at every budget of
the robustness curve: a record is robust at eps when it is classified correctly and the attack found no adversarial
example within eps (in the norm) under its query budget.

Budgets, input ranges, the robustness curve and the metrics (clean_accuracy, robust_accuracy, attack_success_rate
with exact binomial intervals) are those of every evasion attack (`amulet_audit.risks.evasion`).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from amulet_audit.core.params import Interval, OptionalOf
from amulet_audit.risks.evasion import _CURVE, _EVASION_PARAMS, _Evasion

# Halvings of the step size before an iteration gives up its step (the boundary point itself stays adversarial).
MAX_HALVINGS = 20
# The last binary search refines each record's boundary point to this relative precision (the paper's theta is
# coarse where the dimension is small: d^-1.5 = 7% for six features).
FINAL_PRECISION = 1e-3
# Query points per model call, so that memory stays bounded on image inputs.
CHUNK_ELEMENTS = 4_000_000


class LabelOracle:
    """The attacker's only access: the model's predicted label for a batch of inputs, with every query counted.

    `module` maps inputs of shape (m, *shape) to per-class scores (whatever its output convention, the arg-max is
    its label); `shape` the shape of one record. `adversarial(points, labels, owners)` takes flat points (m, d),
    float64, the true labels (m,) and which record each query is made for (m,), and returns, per point, whether the
    model's label differs from the true one (bool (m,)); `queries` (n,) counts the queries made for each record."""

    def __init__(self, module, shape: tuple[int, ...], n: int):
        self.module, self.shape = module, tuple(shape)
        self.queries = np.zeros(n, dtype=np.int64)

    def adversarial(self, points: np.ndarray, labels: np.ndarray, owners: np.ndarray) -> np.ndarray:
        from amulet_audit.ops.forward import predict

        np.add.at(self.queries, owners, 1)
        x = points.astype(np.float32).reshape((len(points), *self.shape))
        return predict(self.module, x) != labels


def _distance(a: np.ndarray, b: np.ndarray, norm: str) -> np.ndarray:
    """Per row of (m, d) arrays: ||a - b|| in `norm` ("l2" or "linf")."""
    diff = a - b
    return np.abs(diff).max(axis=1) if norm == "linf" else np.sqrt((diff * diff).sum(axis=1))


def _clip(points: np.ndarray, lo, hi) -> np.ndarray:
    return points if lo is None else np.clip(points, lo, hi)


def _between(x: np.ndarray, adv: np.ndarray, alpha: np.ndarray, norm: str) -> np.ndarray:
    """The paper's projection Pi_{x, alpha}(adv): L2, the blend (1 - alpha) x + alpha adv (alpha in [0, 1]);
    L-inf, adv clipped to the box of half-width alpha around x (alpha in input units). Both stay in the input
    range when x and adv do."""
    a = alpha[:, None]
    if norm == "l2":
        return (1.0 - a) * x + a * adv
    return np.clip(adv, x - a, x + a)


def binary_search(oracle: LabelOracle, x, adv, y, owners, *, norm: str, theta: float) -> np.ndarray:
    """The boundary point between each clean record x (not adversarial) and its adversarial point adv (m, d): a
    bisection of the projection `_between` until the bracket is below `theta` (L2: of the blend weight, so a
    relative precision; L-inf: min(theta * ||adv - x||_inf, theta), as the authors' implementation). Returns the
    adversarial end of each final bracket (every returned point was queried and is adversarial, or is adv itself)."""
    if norm == "l2":
        high, tol = np.ones(len(x)), np.full(len(x), theta)
    else:
        high = _distance(adv, x, "linf")
        tol = np.minimum(high * theta, theta)
    low = np.zeros(len(x))
    tol = np.maximum(tol, 1e-12)
    while True:
        open_ = (high - low) > tol
        if not open_.any():
            break
        i = np.flatnonzero(open_)
        mid = (high[i] + low[i]) / 2
        hit = oracle.adversarial(_between(x[i], adv[i], mid, norm), y[i], owners[i])
        high[i[hit]], low[i[~hit]] = mid[hit], mid[~hit]
    return _between(x, adv, high, norm)


def _initial_points(oracle: LabelOracle, x, y, pool, pool_pred, owners, *, norm: str, lo, hi, spread, trials: int,
                    rng):
    """An adversarial starting point per record of x (m, d) and whether one was found (m,).

    The nearest record of `pool` (the attacked sample, (n, d), whose labels `pool_pred` are already known: no extra
    query) that the model labels otherwise than the record's true label, in `norm`; records without one try up to
    `trials` random points: uniform over the input range where it is bounded (the paper's initialisation), else
    the record plus Gaussian noise of `spread` (per feature) times 1, 2, 4, ... ."""
    m, d = x.shape
    start = np.zeros_like(x)
    found = np.zeros(m, dtype=bool)
    block = max(1, CHUNK_ELEMENTS // max(len(pool) * d, 1))
    for s in range(0, m, block):
        diff = x[s:s + block, None, :] - pool[None, :, :]
        dist = np.abs(diff).max(axis=2) if norm == "linf" else np.sqrt((diff * diff).sum(axis=2))
        dist[pool_pred[None, :] == y[s:s + block, None]] = np.inf
        j = dist.argmin(axis=1)
        ok = np.isfinite(dist[np.arange(len(j)), j])
        rows = np.arange(s, s + len(j))
        start[rows[ok]], found[rows[ok]] = pool[j[ok]], True
    bounded = lo is not None and np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))
    for k in range(trials):
        need = np.flatnonzero(~found)
        if not need.size:
            break
        if bounded:
            cand = rng.uniform(np.broadcast_to(lo, (len(need), d)), np.broadcast_to(hi, (len(need), d)))
        else:
            cand = _clip(x[need] + (2.0 ** k) * spread * rng.standard_normal((len(need), d)), lo, hi)
        hit = oracle.adversarial(cand, y[need], owners[need])
        start[need[hit]], found[need[hit]] = cand[hit], True
    return start, found


def estimate_direction(oracle: LabelOracle, boundary, y, owners, *, delta, evals: np.ndarray, norm: str, lo, hi,
                       rng) -> np.ndarray:
    """The paper's Monte-Carlo estimate of the boundary's normal at each boundary point (m, d) (Chen et al. 2020,
    Eq. 9-10, with the baseline of Eq. 16): B_i = `evals[i]` unit directions u_b (Gaussian for L2, uniform on
    [-1, 1]^d for L-inf, normalised), queries at boundary + delta_i u_b (clipped to the input range, u_b recomputed
    from the clipped point), phi_b = +1 if adversarial else -1, and the estimate mean_b (phi_b - mean phi) u_b
    (mean_b phi_b u_b when every phi_b agrees), normalised to unit L2 length. Returns (m, d)."""
    m, d = boundary.shape
    out = np.zeros_like(boundary)
    # records with equally many probes are estimated together, in chunks of bounded size
    for b in np.unique(evals):
        rows = np.flatnonzero(evals == b)
        per = max(1, CHUNK_ELEMENTS // max(int(b) * d, 1))
        for s in range(0, len(rows), per):
            r = rows[s:s + per]
            shape = (len(r), int(b), d)
            u = rng.standard_normal(shape) if norm == "l2" else rng.uniform(-1.0, 1.0, shape)
            u /= np.maximum(np.sqrt((u * u).sum(axis=2, keepdims=True)), 1e-12)
            dl = delta[r][:, None, None]
            probe = _clip(boundary[r][:, None, :] + dl * u, lo, hi)
            u = (probe - boundary[r][:, None, :]) / dl
            phi = oracle.adversarial(probe.reshape(-1, d), np.repeat(y[r], b), np.repeat(owners[r], b))
            phi = np.where(phi, 1.0, -1.0).reshape(len(r), int(b))
            mean = phi.mean(axis=1, keepdims=True)
            agree = np.abs(mean) == 1.0
            weight = np.where(agree, phi, phi - mean)
            grad = (weight[:, :, None] * u).mean(axis=1)
            out[r] = grad / np.maximum(np.sqrt((grad * grad).sum(axis=1, keepdims=True)), 1e-12)
    return out


def hopskipjump(module, x: np.ndarray, y: np.ndarray, *, norm: str, queries: int, bounds=None, seed: int = 0,
                gamma: float = 1.0, init_evals: int = 100, max_evals: int = 10_000, init_trials: int = 100,
                stop_at: float = 0.0) -> dict[str, np.ndarray]:
    """HopSkipJump, untargeted (Chen, Jordan & Wainwright, IEEE S&P 2020, Algorithm 2), on every record at once.

    Parameters
    ----------
    module : torch module
        Inputs (m, *shape) -> per-class scores; only their arg-max (the label) is read.
    x : np.ndarray (n, *shape), y : np.ndarray (n,)
        Records and their true labels.
    norm : "l2" or "linf"
        The distance minimised; distances are in the input's units.
    queries : int
        The most model queries made for one record (its clean prediction included).
    bounds : (low, high) or None
        The input range: floats or per-feature arrays/tensors of shape `shape` (may be infinite).
    gamma : float
        The binary-search threshold theta = gamma * d^-3/2 (L2) or gamma * d^-2 (L-inf), d the input dimension;
        the probe radius is delta_t = sqrt(d) theta dist_{t-1} (L2) or d theta dist_{t-1} (L-inf).
    init_evals, max_evals : int
        Probes for the boundary's normal at iteration t: min(init_evals * sqrt(t), max_evals).
    init_trials : int
        Random starting points tried for a record no other record of the sample starts from.
    stop_at : float
        A record stops once its adversarial example is within this distance (already adversarial at every
        budget the caller asks about).

    Returns
    -------
    dict
        "distance" (n,) float64: the smallest distance in `norm` of an adversarial example found (0 where the clean
        record is misclassified, inf where none was found); "queries" (n,) int64: queries made per record;
        "iterations" (n,) int64: boundary steps taken per record; "adversarial" (n, *shape) float32: the closest
        adversarial example found (the record itself where none was). Deterministic for a seed.

    Raises
    ------
    ValueError
        For a norm other than "l2" or "linf", or a query budget below 1.
    """
    if norm not in ("l2", "linf"):
        raise ValueError(f"unknown norm {norm!r}; linf or l2")
    if queries < 1:
        raise ValueError(f"the query budget must be at least 1, got {queries}")
    rng = np.random.default_rng(seed)
    n, shape = len(x), tuple(x.shape[1:])
    d = int(np.prod(shape)) if shape else 1
    flat = np.asarray(x, dtype=np.float64).reshape(n, d)
    y = np.asarray(y, dtype=np.int64)
    lo = hi = None
    if bounds is not None:
        lo = np.broadcast_to(np.asarray(bounds[0], dtype=np.float64).reshape(-1), (d,)).copy()
        hi = np.broadcast_to(np.asarray(bounds[1], dtype=np.float64).reshape(-1), (d,)).copy()
        flat = np.clip(flat, lo, hi)
    theta = gamma * (d ** -1.5 if norm == "l2" else d ** -2.0)
    oracle = LabelOracle(module, shape, n)
    everyone = np.arange(n)

    distance = np.full(n, np.inf)
    iterations = np.zeros(n, dtype=np.int64)
    best = flat.copy()
    if n == 0:
        return {"distance": distance, "queries": oracle.queries, "iterations": iterations,
                "adversarial": best.astype(np.float32).reshape((0, *shape))}
    from amulet_audit.ops.forward import predict

    pred = predict(module, flat.astype(np.float32).reshape((n, *shape)))
    oracle.queries += 1
    distance[pred != y] = 0.0
    live = np.flatnonzero(pred == y)
    if not live.size or queries < 2:
        return {"distance": distance, "queries": oracle.queries, "iterations": iterations,
                "adversarial": best.astype(np.float32).reshape((n, *shape))}

    spread = flat.std(axis=0) if n > 1 else np.ones(d)
    spread = np.where(spread > 0, spread, 1.0)
    xs, ys = flat[live], y[live]
    start, found = _initial_points(oracle, xs, ys, flat, pred, live, norm=norm, lo=lo, hi=hi, spread=spread,
                                   trials=min(init_trials, queries - 1), rng=rng)
    # the bisection's queries per call: what a record must still afford before it starts an iteration
    search_cost = int(math.ceil(math.log2(1.0 / theta))) + 1
    final_cost = int(math.ceil(math.log2(1.0 / FINAL_PRECISION))) + 1
    # every record that found a start bisects once; those too short of budget keep their starting point
    can = found & (oracle.queries[live] + search_cost + final_cost <= queries)
    boundary = start.copy()
    if can.any():
        i = np.flatnonzero(can)
        boundary[i] = binary_search(oracle, xs[i], start[i], ys[i], live[i], norm=norm, theta=theta)
    dist = np.where(found, _distance(boundary, xs, norm), np.inf)

    t = 0
    while True:
        t += 1
        evals = min(int(init_evals * math.sqrt(t)), max_evals)
        room = queries - oracle.queries[live] - (MAX_HALVINGS + search_cost + final_cost)
        active = found & (dist > stop_at) & (room >= min(evals, 10))
        if not active.any():
            break
        i = np.flatnonzero(active)
        per = np.minimum(evals, room[i]).astype(np.int64)
        delta = dist[i] * (math.sqrt(d) * theta if norm == "l2" else d * theta)
        delta = np.maximum(delta, 1e-12)
        direction = estimate_direction(oracle, boundary[i], ys[i], live[i], delta=delta, evals=per, norm=norm,
                                       lo=lo, hi=hi, rng=rng)
        update = direction if norm == "l2" else np.sign(direction)
        # geometric step-size search: xi_t = dist_t / sqrt(t), halved until the step stays adversarial
        xi = dist[i] / math.sqrt(t)
        cand = boundary[i].copy()
        pending = np.ones(len(i), dtype=bool)
        for _ in range(MAX_HALVINGS):
            k = np.flatnonzero(pending)
            if not k.size:
                break
            trial = _clip(boundary[i[k]] + xi[k, None] * update[k], lo, hi)
            hit = oracle.adversarial(trial, ys[i[k]], live[i[k]])
            cand[k[hit]] = trial[hit]
            pending[k[hit]] = False
            xi[k[~hit]] /= 2
        moved = ~pending
        if moved.any():
            k = i[moved]
            boundary[k] = binary_search(oracle, xs[k], cand[moved], ys[k], live[k], norm=norm, theta=theta)
            dist[k] = _distance(boundary[k], xs[k], norm)
        iterations[live[i]] += 1
        if not moved.any():
            # no record could step: a further iteration probes the same points again with more samples
            continue

    # a final, finer bisection of every boundary point (the paper's theta is coarse in few dimensions)
    i = np.flatnonzero(found & (oracle.queries[live] + final_cost <= queries))
    if i.size:
        refined = binary_search(oracle, xs[i], boundary[i], ys[i], live[i], norm=norm, theta=FINAL_PRECISION)
        boundary[i] = refined
        dist[i] = _distance(refined, xs[i], norm)
    distance[live] = dist
    best[live[found]] = boundary[found]
    return {"distance": distance, "queries": oracle.queries.copy(), "iterations": iterations,
            "adversarial": best.astype(np.float32).reshape((n, *shape))}


def _as_array(bound):
    """A bound (float, numpy array or torch tensor) as a numpy array or float."""
    return bound.numpy() if hasattr(bound, "numpy") else bound


class HopSkipJump(_Evasion):
    """HopSkipJump (Chen, Jordan & Wainwright, IEEE S&P 2020): a decision-based evasion attack that reads only the
    model's predicted labels, so it measures robust accuracy for a label-only model too, and cannot be stopped by
    gradient masking.

    Each attacked record starts from the nearest sample record the model labels otherwise (else random points),
    then alternates binary search to the boundary, a sign-query estimate of the boundary's normal and a geometric
    step, minimising the L2 or L-inf distance; robust accuracy at eps is the share of records classified correctly
    whose closest adversarial example found lies beyond eps. `queries` caps the model queries per record (None:
    the profile's budget); `gamma` sets the binary-search threshold (the paper's 1.0)."""

    name = "hopskipjump"
    gradient_free = True
    defaults = {"eps": 0.1, "norm": "l2", "samples": None, "scale": "absolute", "queries": None, "gamma": 1.0}
    parameter_constraints = {
        **_EVASION_PARAMS,
        "queries": OptionalOf(Interval(Integral, 10, None)),
        "gamma": Interval(Real, 0, None, closed="neither"),
    }
    # queries per attacked record: the paper's curves reach most of their gain by a few thousand queries
    budgets = {"quick": {"queries": 2000}, "standard": {"queries": 5000}, "thorough": {"queries": 20000}}

    def _queries(self, p, ctx) -> int:
        return int(p["queries"] or self.budget(ctx.profile, "queries"))

    def _robust(self, p, module, x, y, eps, main, ctx):
        cached = getattr(self, "_found", None)
        if cached is None or cached[0] is not x or cached[1] is not module:
            multiples = _CURVE.get(ctx.profile.curve_points, _CURVE[6])
            smallest = min(m for m in multiples if m > 0) * float(p["eps"])
            bounds = self._bounds
            if bounds is not None:
                bounds = (_as_array(bounds[0]), _as_array(bounds[1]))
            out = hopskipjump(module, x, y, norm=p["norm"], queries=self._queries(p, ctx), bounds=bounds,
                              seed=ctx.seed, gamma=float(p["gamma"]), stop_at=smallest)
            self._found = (x, module, out["distance"])
            q = out["queries"]
            attacked = out["distance"] > 0
            finite = out["distance"][np.isfinite(out["distance"]) & attacked]
            self._extra = {
                "queries_total": int(q.sum()),
                "queries_per_record": {"mean": float(q.mean()) if len(q) else 0.0, "max": int(q.max()) if len(q) else 0,
                                       "budget": self._queries(p, ctx)},
                "iterations_mean": float(out["iterations"][attacked].mean()) if attacked.any() else 0.0,
                "no_adversarial_start": int(np.isinf(out["distance"]).sum()),
                "distance_median": float(np.median(finite)) if finite.size else None,
                "stopped_below": smallest,
            }
        distance = self._found[2]
        return distance > eps

    def _describe(self, p, ctx):
        return {"queries": self._queries(p, ctx), "gamma": float(p["gamma"]), "access": "predicted labels only",
                "combined": "one HopSkipJump run per record minimises the distance to an adversarial example; a "
                            "record is robust at eps when none was found within eps (records stop once within the "
                            "smallest budget of the curve)"}
