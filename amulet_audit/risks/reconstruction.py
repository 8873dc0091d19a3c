"""Data reconstruction: gradient-based model inversion after Fredrikson, Jha & Ristenpart (CCS 2015, MI-Face).

For each class c the attack looks for the input the model finds most typical of c: projected gradient ascent on

    J(x) = log p(c | x) - lam * mean_j ((x_j - x0_j) / s_j)^2

from a neutral start x0 (the mean holdout record, or the middle of the input range), where s_j is feature j's
range, within the data spec's `input_range` or, without one, the per-feature min/max of the training records.
The L2 term is the small prior that keeps the search near natural inputs (Fredrikson et al.'s AuxTerm).

What the reconstruction reveals is measured against real records. Similarity is 1 / (1 + d), d the root-mean-square
distance in units of each feature's range (1 for an identical record, toward 0 far away). A model that generalises
yields reconstructions as close to unseen records of c as to its training records of c; a model that memorised its
training set yields reconstructions closer to the latter. `reconstruction_similarity` is therefore the similarity to
the nearest MEMBER of c minus that to the nearest HOLDOUT record of c (equal numbers of each, so that neither has
more chances to be near), averaged over restarts and classes; 0 means no individual training record is revealed
beyond what the class itself looks like.
"""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec
from amulet_audit.core.params import Interval, OptionalOf, Options
from amulet_audit.core.stats import CI_BOOTSTRAP, bootstrap_ci

RECONSTRUCTION_SIMILARITY = MetricSpec(
    "reconstruction_similarity",
    "Similarity of each class's model-inversion reconstruction to its nearest training record minus that to its "
    "nearest unseen record of the class (0: nothing beyond the class is revealed).",
    higher_is_worse=True, unit="difference",
)

# Images with at most this many values each are recorded in the details for the report (32x32 RGB).
_MAX_IMAGE_VALUES = 3072


def invert(module, n_classes: int, x0: np.ndarray, low: np.ndarray, high: np.ndarray, *, restarts: int, steps: int,
           step_size: float, prior: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Projected gradient ascent on log p(c|x) - prior * mean(((x - x0) / (high - low))^2) for every class c.

    `x0`, `low`, `high` have the model's input shape. Restart 0 starts at x0; the others at x0 plus uniform noise
    of a quarter of the range. Each step moves by `step_size` x the range per feature along the gradient scaled to
    unit root-mean-square, decaying linearly to 0, then clips to [low, high]. Returns the reconstructions, shape
    (n_classes, restarts, *input_shape), and the model's final probability of the target class, (n_classes, restarts).
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    shape = x0.shape
    scale = torch.as_tensor(np.where(high > low, high - low, 1.0), dtype=torch.float32)
    lo = torch.as_tensor(low, dtype=torch.float32)
    hi = torch.as_tensor(high, dtype=torch.float32)
    start = torch.as_tensor(x0, dtype=torch.float32)
    target = torch.arange(n_classes).repeat_interleave(restarts)
    noise = (torch.rand((n_classes * restarts, *shape), generator=gen) - 0.5) * 0.5 * scale
    noise[::restarts] = 0.0
    x = torch.max(torch.min(start + noise, hi), lo)
    dims = tuple(range(1, x.dim()))
    for t in range(steps):
        x.requires_grad_(True)
        logp = torch.log_softmax(module(x), dim=1).gather(1, target[:, None])[:, 0]
        penalty = (((x - start) / scale) ** 2).mean(dim=dims)
        (grad,) = torch.autograd.grad((logp - prior * penalty).sum(), x)
        with torch.no_grad():
            g = grad * scale  # ascent in units of each feature's range
            g = g / g.pow(2).mean(dim=dims, keepdim=True).sqrt().clamp_min(1e-12)
            x = torch.max(torch.min(x + step_size * (1 - t / steps) * scale * g, hi), lo)
    with torch.no_grad():
        prob = torch.softmax(module(x), dim=1).gather(1, target[:, None])[:, 0]
    return x.detach().numpy().reshape(n_classes, restarts, *shape), prob.numpy().reshape(n_classes, restarts)


def similarities(r: np.ndarray, records: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """1 / (1 + d) between each row of `r` (k, d) and each of `records` (m, d): shape (k, m); d = root-mean-square
    distance in units of `scale` (each feature's range). 1 means identical."""
    a, b = r / scale, records / scale
    d2 = (a ** 2).sum(1)[:, None] - 2 * a @ b.T + (b ** 2).sum(1)[None, :]
    return 1.0 / (1.0 + np.sqrt(np.maximum(d2, 0.0) / r.shape[1]))


def similarity_to_nearest(r: np.ndarray, records: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """For each row of `r`, its similarity (see `similarities`) to the nearest of `records`."""
    if len(records) == 0:
        return np.full(len(r), np.nan)
    return similarities(r, records, scale).max(axis=1)


class ModelInversion(Attack):
    """Model inversion (Fredrikson et al., CCS 2015) for every class, scored against members and holdout records.

    Parameters: `steps` and `restarts` (None: by profile: quick 150 and 4, standard 400 and 8, thorough 1000 and
    16), `step_size` (first step, as a fraction of each feature's range), `prior` (weight of the L2 pull toward
    the start), `start` (`mean`: the mean holdout record, an adversary's population knowledge; `midpoint`: the middle
    of the input bounds), `samples` (member and holdout records per class compared with; None: all, equalised).

    The value is the mean over classes of the mean over restarts; its interval is a two-level bootstrap over classes
    and, within each class, over the member and the holdout records compared with (n is the number of classes).
    For image data the
    restart-0 reconstruction of each class is recorded in the details (values in the input range) for the report.
    """

    name = "model_inversion"
    risk = "data_reconstruction"
    metrics = ("reconstruction_similarity",)
    needs = frozenset({"gradients"})
    # Per profile: gradient steps and random restarts per class (restart 0 starts at x0 itself).
    budgets = {"quick": {"steps": 150, "restarts": 4}, "standard": {"steps": 400, "restarts": 8},
               "thorough": {"steps": 1000, "restarts": 16}}
    defaults = {"steps": None, "restarts": None, "step_size": 0.05, "prior": 0.1, "start": "mean", "samples": None}
    parameter_constraints = {
        "steps": OptionalOf(Interval(Integral, 1, 100_000)),
        "restarts": OptionalOf(Interval(Integral, 1, 1000)),
        "step_size": Interval(Real, 0, None, closed="neither"),
        "prior": Interval(Real, 0, None),
        "start": Options(frozenset({"mean", "midpoint"})),
        "samples": OptionalOf(Interval(Integral, 1, None)),
    }

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data = ctx.data
        default_steps, default_restarts = tuple(self.budget(ctx.profile, k) for k in ("steps", "restarts"))
        steps, restarts = p["steps"] or default_steps, p["restarts"] or default_restarts
        shape = data.x_train.shape[1:]
        if data.input_range is not None:
            low = np.full(shape, data.input_range[0], dtype=np.float32)
            high = np.full(shape, data.input_range[1], dtype=np.float32)
            bounds = f"input_range {list(data.input_range)}"
        else:
            low, high = data.x_train.min(axis=0), data.x_train.max(axis=0)
            bounds = "per-feature min/max of the training records"
        x0 = data.x_holdout.mean(axis=0) if p["start"] == "mean" else (low + high) / 2
        x0 = np.clip(x0, low, high).astype(np.float32)
        recon, prob = invert(ctx.model.module, data.n_classes, x0, low, high, restarts=restarts, steps=steps,
                             step_size=float(p["step_size"]), prior=float(p["prior"]), seed=ctx.seed)
        if ctx.progress:
            ctx.progress(0.8)

        flat_scale = np.where(high > low, high - low, 1.0).reshape(-1).astype(np.float64)
        rng = np.random.default_rng(ctx.seed)
        noise = rng.uniform(low.reshape(-1), high.reshape(-1), size=(restarts, flat_scale.size))
        diff = np.full((data.n_classes, restarts), np.nan)
        matrices: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        classes = []
        for c in range(data.n_classes):
            members = data.x_train[data.y_train == c].reshape(-1, flat_scale.size).astype(np.float64)
            holdout = data.x_holdout[data.y_holdout == c].reshape(-1, flat_scale.size).astype(np.float64)
            m = min(len(members), len(holdout), p["samples"] or max(len(members), len(holdout)))
            entry = {"class": data.classes[c], "n_compared": int(m),
                     "target_probability": float(prob[c].mean())}
            if m == 0:
                entry["note"] = "no member or no holdout record of this class"
                classes.append(entry)
                continue
            members = members[np.sort(rng.choice(len(members), m, replace=False))]
            holdout = holdout[np.sort(rng.choice(len(holdout), m, replace=False))]
            r = recon[c].reshape(restarts, -1).astype(np.float64)
            sim_mem, sim_hold = similarities(r, members, flat_scale), similarities(r, holdout, flat_scale)
            matrices[c] = (sim_mem, sim_hold)
            s_mem, s_hold = sim_mem.max(axis=1), sim_hold.max(axis=1)
            diff[c] = s_mem - s_hold
            entry.update({
                "similarity_member": float(s_mem.mean()), "similarity_holdout": float(s_hold.mean()),
                "difference": float(diff[c].mean()),
                # What an input carrying no information about the class scores against the same records.
                "noise_similarity_member": float(similarity_to_nearest(noise, members, flat_scale).mean()),
            })
            classes.append(entry)

        measured = np.flatnonzero(np.isfinite(diff[:, 0]))
        if len(measured) == 0:
            return AttackResult({}, {"classes": classes}, not_applicable="no class has both member and holdout records")
        per_class = diff[measured].mean(axis=1)
        value = float(per_class.mean())
        inner = np.random.default_rng(ctx.seed + 1)

        def resampled(idx: np.ndarray) -> float:
            # Two levels: classes, then within each class its member and its holdout records, since which records
            # happen to lie near a reconstruction is the main chance in this comparison (restarts are not
            # independent: they find nearly the same input).
            out = []
            for c in measured[idx]:
                sim_mem, sim_hold = matrices[c]
                cols_m = inner.integers(0, sim_mem.shape[1], sim_mem.shape[1])
                cols_h = inner.integers(0, sim_hold.shape[1], sim_hold.shape[1])
                out.append(sim_mem[:, cols_m].max(axis=1).mean() - sim_hold[:, cols_h].max(axis=1).mean())
            return float(np.mean(out))

        ci = bootstrap_ci(resampled, len(measured), reps=ctx.profile.bootstrap_reps, seed=ctx.seed,
                          confidence=ctx.confidence)
        details = {
            "classes": classes, "steps": steps, "restarts": restarts, "step_size": float(p["step_size"]),
            "prior": float(p["prior"]), "start": p["start"], "bounds": bounds,
            "similarity": "1 / (1 + RMS distance in units of each feature's range)",
            "mean_similarity_member": float(np.mean([classes[c]["similarity_member"] for c in measured])),
            "mean_similarity_holdout": float(np.mean([classes[c]["similarity_holdout"] for c in measured])),
            "mean_noise_similarity_member": float(np.mean([classes[c]["noise_similarity_member"] for c in measured])),
        }
        if len(shape) >= 2 and int(np.prod(shape)) <= _MAX_IMAGE_VALUES:
            details["images"] = {
                "shape": [int(v) for v in shape],
                "range": [float(low.min()), float(high.max())],
                "labels": list(data.classes),
                "reconstructions": np.round(recon[:, 0], 3).tolist(),
            }
        n = int(len(per_class))
        return AttackResult({"reconstruction_similarity": Measurement(
            value, _around(ci, value), n, ci_method=f"{CI_BOOTSTRAP} over classes, then records within each, widened to "
                                                    "contain the estimate")}, details)


def _around(ci: tuple[float, float], value: float) -> tuple[float, float] | None:
    if not all(np.isfinite(ci)):
        return None
    return (min(ci[0], value), max(ci[1], value))
