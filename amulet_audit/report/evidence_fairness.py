"""Report evidence for discrimination: outcome rates per group, the disparities between groups, and the
bias-audit table in the form 6 RCNY § 5-301 (NYC Local Law 144) describes.

Builders take an attack run (its recorded `details`) and the requirements that read it; every number is read from
the results, never recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from amulet_audit.report import charts
from amulet_audit.report.format import DASH, fmt_number, label, scalar_table
from amulet_audit.report.nodes import Block, Chart, Table
from amulet_audit.results.model import RequirementResult, Run


_GROUP_COLUMNS = (("count", "Count"), ("selection_rate", "Selection rate"), ("tpr", "TPR"), ("fpr", "FPR"),
                  ("accuracy", "Accuracy"))


def discrimination(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """Per sensitive attribute (the one the run reports on first): outcome rates by group as a chart and a table,
    the disparities, and the bias-audit table of 6 RCNY § 5-301."""
    details = run.details
    by_attribute: Mapping[str, Any] = details.get("by_attribute") or {}
    primary = details.get("attribute")
    blocks: list[Block] = []
    for attribute in sorted(by_attribute, key=lambda a: a != primary):  # the requirement's attribute first
        entry = by_attribute[attribute]
        groups = entry.get("groups") or []
        if groups:
            blocks.append(
                Chart(
                    f"Outcome rates by {attribute}",
                    charts.group_rates(groups, attribute=attribute),
                    f"Selection rate, true-positive rate and false-positive rate for each {attribute} group.",
                )
            )
            blocks.append(
                Table(
                    ("Group", *(title for _, title in _GROUP_COLUMNS)),
                    tuple((str(g.get("group", DASH)), *(fmt_number(g.get(k)) for k, _ in _GROUP_COLUMNS))
                          for g in groups),
                    f"Per-group counts and rates ({attribute})" + "".join(
                        f"; {g.get('group')} {title} — undefined, left out of the differences: {why}"
                        for g in groups for k, title in _GROUP_COLUMNS if (why := (g.get("undefined") or {}).get(k))),
                    numeric=frozenset(range(1, len(_GROUP_COLUMNS) + 1)),
                )
            )
        disparities = scalar_table(entry, f"Disparity between {attribute} groups")
        if disparities:
            blocks.append(disparities)
    return blocks + bias_audit_blocks(details)


# --- NYC LL144 bias-audit table (6 RCNY § 5-301) ----------------------------------------------


def bias_audit_blocks(details: Mapping[str, Any]) -> list[Block]:
    """Selection rates and impact ratios per category, sex, race/ethnicity and intersections as separate
    parts, in the form 6 RCNY § 5-301 describes; groups not compared are marked with the reason.
    Empty when the details do not record per-group impact ratios (results of older versions)."""
    by_attribute: Mapping[str, Any] = details.get("by_attribute") or {}
    if not any(g.get("impact_ratio", None) is not None or "compared" in g
               for e in by_attribute.values() for g in (e.get("groups") or [])):
        return []
    min_size = details.get("min_group_size")
    total = details.get("n")
    rows = []
    unknown_counts = []
    for attribute, entry in by_attribute.items():
        groups = entry.get("groups") or []
        kind = f"Intersectional ({attribute})" if " × " in attribute else label(attribute)
        for g in sorted(groups, key=lambda g: (g.get("unknown", False), -(g.get("count") or 0))):
            count = g.get("count") or 0
            notes = []
            if g.get("unknown"):
                notes.append("unknown category" + (": not in the impact ratios (§ 5-301(a)(6))" if entry.get("unknown_excluded") else ""))
            elif g.get("compared") is False:
                notes.append(f"small group (< {min_size} records): not compared" if min_size else "not compared")
            if total and count < 0.02 * total:
                notes.append("under 2 % of the data (§ 5-301(c))")
            rows.append((kind, str(g.get("group", DASH)), fmt_number(count), fmt_number(g.get("selection_rate")),
                         fmt_number(g.get("impact_ratio")) if g.get("compared", True) and not g.get("unknown") else DASH,
                         "; ".join(notes) or DASH))
        if entry.get("n_unknown"):
            unknown_counts.append((attribute, entry["n_unknown"]))
    table = Table(
        ("Category type", "Category", "Number of records", "Selection rate", "Impact ratio", "Note"),
        tuple(rows),
        "Selection rates and impact ratios by category (the form of 6 RCNY § 5-301); impact ratio = selection "
        "rate / highest selection rate among the compared categories",
        numeric=frozenset({2, 3, 4}),
    )
    blocks = [table]
    summary = Table(
        ("Quantity", "Value"),
        (("Records assessed", fmt_number(total)),
         *((f"Records in an unknown category ({a})", fmt_number(n)) for a, n in unknown_counts),
         ("Smallest group compared", f"{min_size} records" if min_size else DASH)),
        "Records assessed and unknown categories (§ 5-301(a)(6))",
        numeric=frozenset({1}),
    )
    blocks.append(summary)
    return blocks
