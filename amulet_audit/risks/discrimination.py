"""Discrimination: group fairness of the audited model's decisions on holdout records (Fairlearn MetricFrame)."""

from __future__ import annotations

from functools import partial
from numbers import Integral

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec, PairedSample
from amulet_audit.ops.forward import predict
from amulet_audit.core.params import Interval, OptionalOf, Options, Text
from amulet_audit.core.stats import sample_ci

DEMOGRAPHIC_PARITY_DIFFERENCE = MetricSpec(
    "demographic_parity_difference", "Largest difference in favourable-outcome (selection) rate between groups.", higher_is_worse=True
)
IMPACT_RATIO = MetricSpec(
    "impact_ratio", "Lowest group selection rate divided by the highest (the four-fifths rule compares it with 0.8).",
    higher_is_worse=False,
)
EQUALIZED_ODDS_DIFFERENCE = MetricSpec(
    "equalized_odds_difference", "Larger of the between-group differences in true- and false-positive rate.", higher_is_worse=True
)
ACCURACY_GAP = MetricSpec("accuracy_gap", "Largest difference in accuracy between groups.", higher_is_worse=True)

_METRICS = ("demographic_parity_difference", "impact_ratio", "equalized_odds_difference", "accuracy_gap")


def gap_statistic(sample: dict[str, np.ndarray], metric: str, n_groups: int) -> float:
    """One disparity summary from a per-record sample ({"group", "true", "decision"} arrays)."""
    return _summaries(sample["group"], n_groups, sample["true"], sample["decision"])[metric]


def _summaries(codes: np.ndarray, n_groups: int, yt: np.ndarray, yp: np.ndarray) -> dict[str, float]:
    """The four disparity summaries from group codes and boolean truth/decision arrays (bootstrap fast path)."""
    count = np.bincount(codes, minlength=n_groups).astype(float)
    pos = np.bincount(codes, weights=yt, minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample may leave a group without positives
        sel = np.bincount(codes, weights=yp, minlength=n_groups) / count
        tpr = np.bincount(codes, weights=yt & yp, minlength=n_groups) / pos
        fpr = np.bincount(codes, weights=~yt & yp, minlength=n_groups) / (count - pos)
        acc = np.bincount(codes, weights=yt == yp, minlength=n_groups) / count
        return {
            "demographic_parity_difference": float(np.nanmax(sel) - np.nanmin(sel)),
            "impact_ratio": float(np.nanmin(sel) / np.nanmax(sel)) if np.nanmax(sel) > 0 else float("nan"),
            "equalized_odds_difference": float(max(np.nanmax(tpr) - np.nanmin(tpr), np.nanmax(fpr) - np.nanmin(fpr))),
            "accuracy_gap": float(np.nanmax(acc) - np.nanmin(acc)),
        }


class GroupFairness(Attack):
    """Selection rate, TPR, FPR and accuracy per group of each sensitive attribute (Fairlearn `MetricFrame`).

    Groups smaller than `min_group_size` are listed but left out of the disparity summaries (their rates are
    too noisy to compare). Without `attribute`, every sensitive attribute is measured and the worst one counts.

    Missing values of a sensitive attribute (empty, NaN, "?", "unknown") form one group named `Unknown`, so
    those records are always counted. `unknown="group"` compares that group like any other;
    `unknown="exclude"` lists it with its count but leaves it out of the disparity summaries, as NYC
    6 RCNY § 5-301(a)(6) does for bias audits (the number of such individuals is still reported).

    `intersectional=True` also measures the intersection of every sensitive attribute of the data spec (an
    extra attribute named e.g. "sex × race" whose groups read "Female × Black"), as 6 RCNY § 5-301(a)(4)(iii)
    requires; a record whose value is unknown for any component attribute is in the unknown category of the
    intersection. Each group's impact ratio (its selection rate divided by the highest selection rate among
    the compared groups, 6 RCNY § 5-300) is recorded in the details."""

    name = "group_fairness"
    risk = "discrimination"
    metrics = _METRICS
    needs = frozenset({"sensitive", "positive_label"})
    defaults = {"attribute": None, "min_group_size": 30, "intersectional": False, "unknown": "group"}
    parameter_constraints = {
        "attribute": OptionalOf(Text()),
        "min_group_size": Interval(Integral, 1, None),
        "intersectional": Options(frozenset({True, False})),
        "unknown": Options(frozenset({"group", "exclude"})),
    }

    def run(self, ctx: AttackContext) -> AttackResult:
        p = self.get_params()
        data = ctx.data
        if not data.sensitive_holdout:
            return AttackResult({}, not_applicable="the data spec names no sensitive attribute")
        if data.positive_index is None:
            return AttackResult({}, not_applicable="the data spec names no positive_label (the favourable outcome)")
        attrs = [p["attribute"]] if p["attribute"] else list(data.sensitive_holdout)
        unknown = [a for a in attrs if a not in data.sensitive_holdout]
        if unknown:
            return AttackResult({}, not_applicable=f"'{unknown[0]}' is not a sensitive attribute of the data spec")

        pos = data.positive_index
        yt = data.y_holdout == pos
        yp = predict(ctx.model.module, data.x_holdout) == pos
        n = len(yt)
        columns = {a: _with_unknown(data.sensitive_holdout[a]) for a in attrs}
        intersection_note = ""
        if p["intersectional"]:
            names = list(data.sensitive_holdout)
            if len(names) >= 2:
                columns[INTERSECTION.join(names)] = _intersect([_with_unknown(data.sensitive_holdout[a]) for a in names])
            else:
                intersection_note = "intersectional groups need two or more sensitive attributes in the data spec"
        exclude_unknown = p["unknown"] == "exclude"
        by_attr, values = {}, {}
        for attr, groups in columns.items():
            table = _frame(yt, yp, groups).by_group
            is_unknown = {g: _is_unknown_group(str(g)) for g in table.index}
            large = [g for g in table.index if table.loc[g, "count"] >= p["min_group_size"]
                     and not (exclude_unknown and is_unknown[g])]
            small = [str(g) for g in table.index if table.loc[g, "count"] < p["min_group_size"]]
            n_unknown = int(sum(table.loc[g, "count"] for g in table.index if is_unknown[g]))
            entry = {"excluded_small_groups": small, "n_unknown": n_unknown,
                     "unknown_excluded": bool(exclude_unknown and n_unknown)}
            if len(large) < 2:
                by_attr[attr] = {"groups": _rows(table, large, is_unknown), **entry,
                                 "note": f"fewer than two groups with at least {p['min_group_size']} records"}
                continue
            keep = np.isin(groups, large)
            kept = _frame(yt[keep], yp[keep], groups[keep])
            diff, ratio = kept.difference(), kept.ratio()
            summary = {
                "demographic_parity_difference": float(diff["selection_rate"]),
                "impact_ratio": float(ratio["selection_rate"]),
                "equalized_odds_difference": float(max(diff["tpr"], diff["fpr"])),
                "accuracy_gap": float(diff["accuracy"]),
            }
            by_attr[attr] = {"groups": _rows(table, large, is_unknown), **entry, **summary}
            values[attr] = (summary, keep, groups)

        if not values:
            return AttackResult({}, {"by_attribute": by_attr},
                                not_applicable=f"no sensitive attribute has two groups of at least {p['min_group_size']} records")

        metrics, worst_attr = {}, {}
        for m in _METRICS:
            higher_is_worse = m != "impact_ratio"
            pick = (max if higher_is_worse else min)(values, key=lambda a: _nan_last(values[a][0][m], higher_is_worse))
            summary, keep, groups = values[pick]
            codes_all = np.unique(groups[keep], return_inverse=True)[1]
            yt_k, yp_k = yt[keep], yp[keep]
            n_groups = int(codes_all.max()) + 1
            sample = PairedSample(np.flatnonzero(keep), {"group": codes_all, "true": yt_k, "decision": yp_k},
                                  partial(gap_statistic, metric=m, n_groups=n_groups), codes_all)  # within each group
            ci = sample_ci(sample, reps=ctx.profile.bootstrap_reps, seed=ctx.seed, confidence=ctx.confidence)
            value = summary[m]
            paired = sample if np.isfinite(value) else None
            metrics[m] = Measurement(value if np.isfinite(value) else None, ci if np.isfinite(value) else None, int(keep.sum()),
                                     "" if np.isfinite(value) else "no group receives the favourable outcome", paired)
            worst_attr[m] = pick
        details = {"attribute": worst_attr[_METRICS[0]], "worst_attribute": worst_attr, "by_attribute": by_attr,
                   "positive_label": data.classes[pos], "n": n, "min_group_size": p["min_group_size"]}
        if p["intersectional"] or exclude_unknown:
            details["unknown"] = p["unknown"]
            details["intersectional"] = bool(p["intersectional"])
        if intersection_note:
            details["warnings"] = [intersection_note]
        return AttackResult(metrics, details)


def _frame(yt: np.ndarray, yp: np.ndarray, groups: np.ndarray):
    from fairlearn.metrics import MetricFrame, count, false_positive_rate, selection_rate, true_positive_rate
    from sklearn.metrics import accuracy_score

    return MetricFrame(
        metrics={"count": count, "selection_rate": selection_rate, "tpr": true_positive_rate,
                 "fpr": false_positive_rate, "accuracy": accuracy_score},
        y_true=yt, y_pred=yp, sensitive_features=groups,
    )


def _nan_last(v: float, higher_is_worse: bool) -> float:
    if not np.isfinite(v):
        return -np.inf if higher_is_worse else np.inf
    return v


INTERSECTION = " × "
UNKNOWN = "Unknown"
# Values that mean "not recorded" in a sensitive column read as text (pandas NaN becomes "nan").
_MISSING = frozenset({"", "nan", "none", "null", "<na>", "na", "n/a", "?", "unknown"})


def _with_unknown(values: np.ndarray) -> np.ndarray:
    """Group labels with every missing-value spelling replaced by one `Unknown` group (strings)."""
    out = np.asarray(values).astype(str).astype(object)
    missing = np.array([v.strip().lower() in _MISSING for v in out], dtype=bool)
    out[missing] = UNKNOWN
    return out.astype(str)


def _intersect(columns: list[np.ndarray]) -> np.ndarray:
    """Joined labels ("Female × Black"); a record unknown in any component is `Unknown` in the intersection."""
    joined = np.array([INTERSECTION.join(parts) for parts in zip(*columns)], dtype=object)
    any_unknown = np.zeros(len(joined), dtype=bool)
    for c in columns:
        any_unknown |= c == UNKNOWN
    joined[any_unknown] = UNKNOWN
    return joined.astype(str)


def _is_unknown_group(group: str) -> bool:
    return group == UNKNOWN


def _rows(table, compared=None, unknown=None) -> list[dict]:
    """Per-group rows; with `compared` (the groups in the disparity summaries) also each group's impact ratio
    against the highest selection rate among them, and whether the group was compared."""
    rows = [
        {"group": str(g), "count": int(r["count"]), "selection_rate": _f(r["selection_rate"]), "tpr": _f(r["tpr"]),
         "fpr": _f(r["fpr"]), "accuracy": _f(r["accuracy"])}
        for g, r in table.iterrows()
    ]
    if compared is None:
        return rows
    compared_set = {str(g) for g in compared}
    rates = [r["selection_rate"] for r in rows if r["group"] in compared_set and r["selection_rate"] is not None]
    best = max(rates) if rates else None
    for r in rows:
        r["compared"] = r["group"] in compared_set
        r["unknown"] = bool(unknown and unknown.get(r["group"], False))
        rate = r["selection_rate"]
        r["impact_ratio"] = _f(rate / best) if best and rate is not None else None
    return rows


def _f(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None
