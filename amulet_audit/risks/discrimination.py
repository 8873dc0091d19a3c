"""Discrimination: group fairness of the audited model's decisions on holdout records (per-group rates as Fairlearn's
`MetricFrame` defines them, with 0/0 rates undefined rather than 0)."""

from __future__ import annotations

from functools import partial
from numbers import Integral

import numpy as np

from amulet_audit.core.attack import Attack, AttackContext, AttackResult, Measurement, MetricSpec, PairedSample
from amulet_audit.ops.forward import predict
from amulet_audit.core.params import Boolean, Interval, OptionalOf, Options, Text
from amulet_audit.core.stats import sample_ci

DEMOGRAPHIC_PARITY_DIFFERENCE = MetricSpec(
    "demographic_parity_difference", "Largest difference in favourable-outcome (selection) rate between groups.", higher_is_worse=True,
    unit="difference",
)
IMPACT_RATIO = MetricSpec(
    "impact_ratio", "Lowest group selection rate divided by the highest (the four-fifths rule compares it with 0.8).",
    higher_is_worse=False, unit="ratio",
)
EQUALIZED_ODDS_DIFFERENCE = MetricSpec(
    "equalized_odds_difference", "Larger of the between-group differences in true- and false-positive rate.", higher_is_worse=True,
    unit="difference",
)
ACCURACY_GAP = MetricSpec("accuracy_gap", "Largest difference in accuracy between groups.", higher_is_worse=True,
                          unit="difference")

_METRICS = ("demographic_parity_difference", "impact_ratio", "equalized_odds_difference", "accuracy_gap")


def gap_statistic(sample: dict[str, np.ndarray], metric: str, n_groups: int) -> float:
    """One disparity summary from a per-record sample ({"group", "true", "decision"} arrays)."""
    return _summaries(sample["group"], n_groups, sample["true"], sample["decision"])[metric]


def _group_rates(codes: np.ndarray, n_groups: int, yt: np.ndarray, yp: np.ndarray) -> dict[str, np.ndarray]:
    """Per-group counts and rates, each an array of shape (n_groups,) indexed by group code.

    `codes`: int group code per record (0..n_groups-1); `yt`, `yp`: bool per record (favourable ground truth,
    favourable decision). Rates are fractions; one whose denominator is empty is NaN (undefined), never 0: TPR of a
    group without positives, FPR of a group without negatives, any rate of an empty group. (Fairlearn's
    `true_positive_rate` returns 0 for 0/0, which counts a group without positives as one whose positives were all
    rejected.)"""
    yt, yp = np.asarray(yt, dtype=bool), np.asarray(yp, dtype=bool)
    count = np.bincount(codes, minlength=n_groups).astype(float)
    pos = np.bincount(codes, weights=yt, minlength=n_groups)
    neg = count - pos

    def ratio(hits: np.ndarray, of: np.ndarray) -> np.ndarray:
        out = np.full(n_groups, np.nan)
        np.divide(np.bincount(codes, weights=hits, minlength=n_groups), of, out=out, where=of > 0)
        return out

    return {"count": count, "positives": pos, "negatives": neg, "selection_rate": ratio(yp, count),
            "tpr": ratio(yt & yp, pos), "fpr": ratio(~yt & yp, neg), "accuracy": ratio(yt == yp, count)}


def _spread(rates: np.ndarray) -> float:
    """max - min over the groups whose rate is defined; NaN when fewer than two are."""
    defined = rates[np.isfinite(rates)]
    return float(defined.max() - defined.min()) if len(defined) >= 2 else float("nan")


def _summaries(codes: np.ndarray, n_groups: int, yt: np.ndarray, yp: np.ndarray) -> dict[str, float]:
    """The four disparity summaries from group codes and boolean truth/decision arrays: the point estimate and every
    bootstrap replicate use this one function, so both follow one convention. A group whose rate is undefined (0/0,
    see `_group_rates`) is left out of that rate's difference; a summary is NaN (not measurable) when fewer than two
    groups have the rates it compares, or, for the impact ratio, when no group receives the favourable outcome
    (the reference rate is 0). Equalized odds needs both its TPR and its FPR difference."""
    r = _group_rates(codes, n_groups, yt, yp)
    sel = r["selection_rate"][np.isfinite(r["selection_rate"])]
    return {
        "demographic_parity_difference": _spread(r["selection_rate"]),
        "impact_ratio": float(sel.min() / sel.max()) if len(sel) >= 2 and sel.max() > 0 else float("nan"),
        "equalized_odds_difference": float(max(_spread(r["tpr"]), _spread(r["fpr"])))
        if np.isfinite(_spread(r["tpr"])) and np.isfinite(_spread(r["fpr"])) else float("nan"),
        "accuracy_gap": _spread(r["accuracy"]),
    }


def _why_undefined(rates: dict[str, np.ndarray], attribute: str) -> dict[str, str]:
    """One sentence per summary that `_summaries` leaves undefined for these per-group rates (the compared groups of
    `attribute`)."""
    def defined(k: str) -> int:
        return int(np.isfinite(rates[k]).sum())

    out = {}
    if defined("selection_rate") < 2:
        out["demographic_parity_difference"] = out["accuracy_gap"] = (
            f"fewer than two compared '{attribute}' groups have records")
    if "demographic_parity_difference" in out:
        out["impact_ratio"] = out["demographic_parity_difference"]
    elif np.nanmax(rates["selection_rate"]) <= 0:
        out["impact_ratio"] = (f"no compared '{attribute}' group receives the favourable outcome, so the ratio to "
                               "the highest selection rate is 0/0")
    if defined("tpr") < 2:
        out["equalized_odds_difference"] = (
            f"fewer than two compared '{attribute}' groups have a favourable ground-truth outcome (true-positive "
            "rate is 0/0 in the others), so true-positive rates cannot be compared")
    elif defined("fpr") < 2:
        out["equalized_odds_difference"] = (
            f"fewer than two compared '{attribute}' groups have an unfavourable ground-truth outcome (false-positive "
            "rate is 0/0 in the others), so false-positive rates cannot be compared")
    return out


class GroupFairness(Attack):
    """Selection rate, TPR, FPR and accuracy per group of each sensitive attribute (as Fairlearn's `MetricFrame`
    defines them, but a 0/0 rate is undefined: left out of the differences, shown as undefined with the reason).

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
        "intersectional": Boolean(),
        "unknown": Options(frozenset({"group", "exclude"})),
    }

    def _run(self, ctx: AttackContext) -> AttackResult:
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
            table = _frame(yt, yp, groups)
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
            codes = np.unique(groups[keep], return_inverse=True)[1]
            summary = _summaries(codes, len(large), yt[keep], yp[keep])
            undefined = _why_undefined(_group_rates(codes, len(large), yt[keep], yp[keep]), attr)
            by_attr[attr] = {"groups": _rows(table, large, is_unknown), **entry,
                             **{m: _f(v) for m, v in summary.items()}}
            if undefined:
                by_attr[attr]["undefined"] = undefined
            values[attr] = (summary, keep, groups, undefined)

        if not values:
            return AttackResult({}, {"by_attribute": by_attr},
                                not_applicable=f"no sensitive attribute has two groups of at least {p['min_group_size']} records")

        metrics, worst_attr, ci_extended = {}, {}, []
        for m in _METRICS:
            higher_is_worse = m != "impact_ratio"
            pick = (max if higher_is_worse else min)(values, key=lambda a: _nan_last(values[a][0][m], higher_is_worse))
            summary, keep, groups, undefined = values[pick]
            codes_all = np.unique(groups[keep], return_inverse=True)[1]
            yt_k, yp_k = yt[keep], yp[keep]
            n_groups = int(codes_all.max()) + 1
            sample = PairedSample(np.flatnonzero(keep), {"group": codes_all, "true": yt_k, "decision": yp_k},
                                  partial(gap_statistic, metric=m, n_groups=n_groups), codes_all)  # within each group
            value = summary[m]
            if not np.isfinite(value):  # undefined for every attribute (the pick puts undefined values last)
                metrics[m] = Measurement(None, None, int(keep.sum()), undefined[m])
                worst_attr[m] = pick
                continue
            ci = sample_ci(sample, reps=ctx.profile.bootstrap_reps, seed=ctx.seed, confidence=ctx.confidence)
            ci, extended = _covering(ci, value)
            if extended:
                ci_extended.append(m)
            metrics[m] = Measurement(value, ci, int(keep.sum()), "", sample, ci_method=CI_GROUP_BOOTSTRAP)
            worst_attr[m] = pick
        details = {"attribute": worst_attr[_METRICS[0]], "worst_attribute": worst_attr, "by_attribute": by_attr,
                   "positive_label": data.classes[pos], "n": n, "min_group_size": p["min_group_size"]}
        if p["intersectional"] or exclude_unknown:
            details["unknown"] = p["unknown"]
            details["intersectional"] = bool(p["intersectional"])
        if ci_extended:
            details["ci_extended_to_point"] = ci_extended
        if intersection_note:
            details["warnings"] = [intersection_note]
        return AttackResult(metrics, details)


def _frame(yt: np.ndarray, yp: np.ndarray, groups: np.ndarray):
    """Per-group counts and rates (`_group_rates`) as a DataFrame indexed by group label, in sorted order; the
    columns of Fairlearn's `MetricFrame.by_group` (count, selection_rate, tpr, fpr, accuracy) plus positives and
    negatives, with an undefined rate as NaN."""
    import pandas as pd

    labels, codes = np.unique(groups, return_inverse=True)
    return pd.DataFrame(_group_rates(codes, len(labels), yt, yp), index=labels)


# How the fairness intervals are computed (`ci_method`). Replicates of a max - min (or min / max) over groups are
# biased away from the point estimate, and a percentile interval can then exclude its own point (e.g. equal rates:
# point 0, every replicate > 0); the interval is then extended to the point, which only makes PASS harder.
CI_GROUP_BOOTSTRAP = ("percentile bootstrap, each group resampled apart, undefined (0/0) rates left out of every "
                      "replicate; extended to the point estimate where the percentiles exclude it")


def _covering(ci: tuple[float, float], value: float) -> tuple[tuple[float, float] | None, bool]:
    """The interval `ci` extended to contain `value`, and whether it had to be; None when the bootstrap gave no
    finite interval (every replicate undefined), so the verdict cannot be PASS."""
    lo, hi = ci
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return None, False
    return (min(lo, value), max(hi, value)), bool(value < lo or value > hi)


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
    against the highest selection rate among them, and whether the group was compared. An undefined rate is None,
    and the row's `undefined` maps it to the reason (one sentence)."""
    rows = []
    for g, r in table.iterrows():
        row = {"group": str(g), "count": int(r["count"]), "positives": int(r["positives"]),
               "negatives": int(r["negatives"]), "selection_rate": _f(r["selection_rate"]), "tpr": _f(r["tpr"]),
               "fpr": _f(r["fpr"]), "accuracy": _f(r["accuracy"])}
        undefined = {}
        if row["tpr"] is None:
            undefined["tpr"] = "no favourable outcome in this group's ground truth: the true-positive rate is 0/0"
        if row["fpr"] is None:
            undefined["fpr"] = "no unfavourable outcome in this group's ground truth: the false-positive rate is 0/0"
        if undefined:
            row["undefined"] = undefined
        rows.append(row)
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
        if r["compared"] and not best:
            r.setdefault("undefined", {})["impact_ratio"] = ("no compared group receives the favourable outcome: "
                                                             "the ratio to the highest selection rate is 0/0")
    return rows


def _f(v) -> float | None:
    v = float(v)
    return v if np.isfinite(v) else None
