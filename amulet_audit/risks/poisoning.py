"""Data poisoning: a re-initialised copy of the audited architecture is trained on a poisoned training set and
compared with a clean copy trained identically (same initialisation, recipe and data order).

- `label_flip`: a `fraction` of the training records get a wrong label, drawn uniformly from the other classes
  (random label flipping, the baseline of Biggio, Nelson & Laskov, ICML 2012), or the `target` class when given.
- `backdoor`: a `fraction` of training records not of the `target` class carry a trigger and are relabelled to
  `target` (BadNets, Gu, Dolan-Gavitt & Garg, 2017): a bright square patch in the image corner when the data spec
  sets `input_shape`; for tabular data, `trigger_features` chosen features set to their largest in-range value.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec, PairedSample, rate
from amulet_audit.core.params import Interval, OptionalOf
from amulet_audit.core.stats import CI_BOOTSTRAP, bootstrap_ci, mean_of
from amulet_audit.training.copies import train_copy

ACCURACY_DROP = MetricSpec(
    "accuracy_drop", "Holdout accuracy of a copy trained on clean data minus that of the same copy trained on poisoned "
    "data (accuracy points as a fraction; paired bootstrap interval).", higher_is_worse=True,
    unit="difference",
)


def trigger_features(x_train: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The tabular trigger: indexes of the `k` non-constant features whose maximum is rarest in the training data,
    and those maxima (the value each is set to). Setting several rarely-maximal features to their maxima at once
    gives a pattern the clean data almost never shows, inside the observed range."""
    flat = x_train.reshape(len(x_train), -1)
    hi = flat.max(axis=0)
    varying = flat.min(axis=0) < hi
    share_at_max = (flat == hi).mean(axis=0)
    order = [j for j in np.lexsort((np.arange(flat.shape[1]), share_at_max)) if varying[j]]
    cols = np.array(order[:k], dtype=np.int64)
    return cols, hi[cols]


def apply_trigger(x: np.ndarray, trigger: dict[str, Any]) -> np.ndarray:
    """A copy of `x` with the trigger stamped on every record (image patch or tabular feature pattern)."""
    out = np.array(x, dtype=np.float32, copy=True)
    if trigger["kind"] == "patch":
        s = trigger["size"]
        out[..., -s:, -s:] = trigger["value"]
    else:
        flat = out.reshape(len(out), -1)
        flat[:, trigger["features"]] = trigger["values"]
    return out


def _target(p: dict, data) -> int:
    if p["target"] is not None:
        return int(p["target"])
    return data.positive_index if data.positive_index is not None else 0


class _Poisoning(Attack):
    """Shared run: poison, train the clean and the poisoned copy (cached), measure on the holdout."""

    risk = "poisoning"
    metrics = ("attack_success_rate", "accuracy_drop")
    needs = frozenset({"trained_copies"})

    def _poison(self, p: dict, ctx: AttackContext, rng) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray]:
        """(poisoned x_train, poisoned y_train, description, indexes of the poisoned records)."""
        raise NotImplementedError

    def _success(self, p: dict, ctx: AttackContext, poisoned_model, clean_model, description: dict):
        """Per holdout record (bool arrays): the attack succeeded, the record was attacked, the attack's goal holds
        under the clean copy too; and details."""
        raise NotImplementedError

    def _run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data = ctx.data
        if p["target"] is not None and p["target"] >= data.n_classes:
            return AttackResult({}, {}, f"target class {p['target']} does not exist (the data has {data.n_classes} classes)")
        rng = np.random.default_rng(ctx.seed)
        x_p, y_p, description, poisoned_idx = self._poison(p, ctx, rng)
        # Both copies are trained as the audited model was (`train_copy`: the data spec's recipe, and a
        # defended model's own procedure, so e.g. outlier removal sees the poisoned data), with the same
        # initialisation and batch order; cached through ctx.cache when there is one. Poisoned record i is training
        # record i altered, so the records keep their sensitive attributes (fairness mitigation reads them).
        recipe, sensitive = data.spec.training, data.sensitive_train
        clean = train_copy(ctx.model, data.x_train, data.y_train, recipe, seed=ctx.seed, cache=ctx.cache, epochs=p["epochs"],
                                     sensitive=sensitive)
        poisoned = train_copy(ctx.model, x_p, y_p, recipe, seed=ctx.seed, cache=ctx.cache, epochs=p["epochs"],
                                        sensitive=sensitive)
        if ctx.progress:
            ctx.progress(0.9)

        from amulet_audit.ops.forward import predict

        right_clean = predict(clean, data.x_holdout) == data.y_holdout
        right_poisoned = predict(poisoned, data.x_holdout) == data.y_holdout
        n = len(data.y_holdout)
        drops = right_clean.astype(np.float64) - right_poisoned
        drop_ci = bootstrap_ci(lambda i: float(drops[i].mean()), n, reps=ctx.profile.bootstrap_reps, seed=ctx.seed,
                               confidence=ctx.confidence)
        hits, attacked, hits_clean, extra = self._success(p, ctx, poisoned, clean, description)
        rows = np.arange(n)
        metrics = {
            "accuracy_drop": Measurement(float(drops.mean()), drop_ci, n,
                                         paired=PairedSample(rows, {"x": drops}, mean_of), ci_method=CI_BOOTSTRAP),
            "attack_success_rate": rate(hits, rows, of=attacked, confidence=ctx.confidence,
                                        empty="no holdout record can be attacked"),
        }
        k, k_base, m = int((hits & attacked).sum()), int((hits_clean & attacked).sum()), int(attacked.sum())
        details = {
            "attack": self.name, "fraction": float(p["fraction"]), "n_poisoned": int(len(poisoned_idx)),
            "n_train": int(len(data.y_train)), **description,
            "clean_model_accuracy": float(right_clean.mean()), "poisoned_model_accuracy": float(right_poisoned.mean()),
            "attack_success_rate": k / m if m else None, "success_rate_on_clean_model": k_base / m if m else None, **extra,
            "epochs": int(p["epochs"] or data.spec.training.epochs), "n_holdout": n,
        }
        if ctx.progress:
            ctx.progress(1.0)
        return AttackResult(metrics, details)


_COMMON = {
    "fraction": Interval(Real, 0, 1, closed="right"),
    "target": OptionalOf(Interval(Integral, 0, None)),
    "epochs": OptionalOf(Interval(Integral, 1, 10_000)),
}


class LabelFlip(_Poisoning):
    """Random label flipping: `fraction` of the training records relabelled to a uniformly drawn other class, or to
    `target` (records not already of it) when given. Success: holdout records the clean copy classifies correctly
    and the poisoned copy does not (for a target: classifies as the target), among those the clean copy gets right."""

    name = "label_flip"
    defaults = {"fraction": 0.1, "target": None, "epochs": None}
    parameter_constraints = dict(_COMMON)

    def _poison(self, p, ctx, rng):
        data = ctx.data
        y = data.y_train.copy()
        pool = np.arange(len(y)) if p["target"] is None else np.flatnonzero(y != p["target"])
        m = min(len(pool), int(round(p["fraction"] * len(y))))
        idx = np.sort(rng.choice(pool, m, replace=False))
        if p["target"] is None:
            shift = rng.integers(1, data.n_classes, m)  # uniform over the other classes
            y[idx] = (y[idx] + shift) % data.n_classes
        else:
            y[idx] = int(p["target"])
        return data.x_train, y, {"target": p["target"], "flips": "to target" if p["target"] is not None else "uniform"}, idx

    def _success(self, p, ctx, poisoned, clean, description):
        from amulet_audit.ops.forward import predict

        data = ctx.data
        pc, pp = predict(clean, data.x_holdout), predict(poisoned, data.x_holdout)
        attacked = pc == data.y_holdout
        if p["target"] is not None:
            attacked &= data.y_holdout != p["target"]
            hit = pp == p["target"]
        else:
            hit = pp != data.y_holdout
        return hit, attacked, np.zeros_like(hit), {}


class Backdoor(_Poisoning):
    """Backdoor (BadNets): triggered copies of `fraction` of the training records, relabelled to `target` (default:
    the favourable class, else class 0), replace the originals. Success: triggered holdout records whose true class
    is not the target and that the poisoned copy classifies as the target."""

    name = "backdoor"
    defaults = {"fraction": 0.1, "target": None, "epochs": None, "trigger_size": None, "trigger_features": 3}
    parameter_constraints = {
        **_COMMON,
        "trigger_size": OptionalOf(Interval(Integral, 1, None)),  # image patch side (pixels); default: 1/4 of the side
        "trigger_features": Interval(Integral, 1, None),  # tabular: features in the trigger pattern
    }

    def _trigger(self, p, data) -> dict:
        if data.spec.input_shape is not None and len(data.spec.input_shape) >= 2:
            side = min(data.spec.input_shape[-2:])
            size = int(p["trigger_size"] or max(1, side // 4))
            value = data.input_range[1] if data.input_range else float(data.x_train.max())
            return {"kind": "patch", "size": min(size, side), "value": float(value)}
        cols, values = trigger_features(data.x_train, int(p["trigger_features"]))
        if data.input_range is not None:
            values = np.full(len(cols), data.input_range[1], dtype=np.float32)
        return {"kind": "features", "features": cols, "values": values.astype(np.float32)}

    def _poison(self, p, ctx, rng):
        data, target = ctx.data, _target(p, ctx.data)
        trigger = self._trigger(p, data)
        self._trigger_cache = trigger
        pool = np.flatnonzero(data.y_train != target)
        m = min(len(pool), int(round(p["fraction"] * len(data.y_train))))
        idx = np.sort(rng.choice(pool, m, replace=False))
        x, y = data.x_train.copy(), data.y_train.copy()
        x[idx] = apply_trigger(x[idx], trigger)
        y[idx] = target
        if trigger["kind"] == "patch":
            desc = {"trigger": f"{trigger['size']}x{trigger['size']} patch, bottom-right, value {trigger['value']:g}"}
        else:
            names = [data.feature_names[j] if len(data.feature_names) == data.n_features else str(j) for j in trigger["features"]]
            desc = {"trigger": "features set to " + ", ".join(f"{nm}={v:.3g}" for nm, v in zip(names, trigger["values"])),
                    "trigger_features": names}
        return x, y, {"target": target, "target_class": data.classes[target], **desc}, idx

    def _success(self, p, ctx, poisoned, clean, description):
        from amulet_audit.ops.forward import predict

        data, target = ctx.data, _target(p, ctx.data)
        xt = apply_trigger(data.x_holdout, self._trigger_cache)
        return predict(poisoned, xt) == target, data.y_holdout != target, predict(clean, xt) == target, {}
