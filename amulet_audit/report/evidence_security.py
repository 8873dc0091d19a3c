"""Report evidence for the security risks measured by re-training or querying: poisoning and model extraction.

Builders take an attack run's recorded `details` (and the requirements sharing that run) and return charts and
tables; every number is read from the results, never recomputed. Evasion's robustness curve is in document.py.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from markupsafe import Markup

from amulet_audit.report import charts

if TYPE_CHECKING:
    from amulet_audit.report import document as doc


def poisoning_bars(details: Mapping[str, Any]) -> Markup:
    """Grouped bars (0..1): holdout accuracy and attack success rate of the clean and the poisoned copy."""
    measures = [("Holdout accuracy", "clean_model_accuracy", "poisoned_model_accuracy"),
                ("Attack success rate", "success_rate_on_clean_model", "attack_success_rate")]
    measures = [m for m in measures if charts._is_number(details.get(m[1])) or charts._is_number(details.get(m[2]))]
    return charts.grouped_bars([m[0] for m in measures],
                               [(who, [details.get(m[1 + j]) for m in measures])
                                for j, who in enumerate(("clean copy", "poisoned copy"))],
                               label="Accuracy and attack success of the clean and the poisoned copy",
                               ylabel="share of holdout records", size=(6.4, 2.6), top=1.12, values=True)


def fidelity_curve(curve: Sequence[Mapping[str, Any]], *, target_accuracy: float | None = None,
                   maximum: float | None = None) -> Markup:
    """Fidelity (0..1) of the extracted surrogate against the number of queries (log axis), with its confidence
    band, and the surrogate's accuracy; `maximum` is the policy's highest acceptable fidelity, if any."""
    points = sorted((p for p in curve if charts._is_number(p.get("queries")) and charts._is_number(p.get("fidelity"))),
                    key=lambda p: p["queries"])
    xs = [float(p["queries"]) for p in points]
    with charts._figure() as (fig, ax):
        cis = [p.get("ci") for p in points]
        if cis and all(isinstance(c, (list, tuple)) and len(c) == 2 for c in cis):
            ax.fill_between(xs, [c[0] for c in cis], [c[1] for c in cis], color=charts.PALETTE[0], alpha=0.18,
                            linewidth=0, label="confidence interval")
        ax.plot(xs, [p["fidelity"] for p in points], color=charts.PALETTE[0], marker="o", markersize=4, linewidth=1.8,
                label="fidelity (agreement with the model)")
        acc = [p.get("surrogate_accuracy") for p in points]
        if all(charts._is_number(a) for a in acc):
            ax.plot(xs, acc, color=charts.PALETTE[2], marker="s", markersize=3.5, linewidth=1.2, linestyle="--",
                    label="surrogate accuracy")
        if target_accuracy is not None:
            ax.axhline(target_accuracy, color=charts.MUTED, linestyle=":", linewidth=1.2,
                       label=f"model accuracy ({target_accuracy:.3f})")
        if maximum is not None:
            ax.axhline(maximum, color=charts.PALETTE[3], linestyle="--", linewidth=1.2, label=f"allowed maximum ({maximum:g})")
        if len(xs) > 1:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{int(v):,}" for v in xs])
            ax.minorticks_off()
        ax.set_xlabel("queries to the model")
        ax.set_ylabel("share of unseen records")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2)
        return charts._to_svg(fig, "Fidelity of the extracted surrogate against the query budget")


def poisoning(details: Mapping[str, Any], reqs: Sequence[Any]) -> list[doc.Block]:
    """Clean vs poisoned copy: accuracy and attack success, as a chart and a table."""
    from amulet_audit.report import document as doc  # document.py imports this module to register the builders
    if not any(k in details for k in ("clean_model_accuracy", "poisoned_model_accuracy")):
        return []
    fraction = details.get("fraction")
    caption = ("Both copies share the audited architecture, initialisation and training recipe; the poisoned one was "
               "trained with " + (f"{fraction:.0%} of its training records poisoned." if charts._is_number(fraction)
                                  else "poisoned training records."))
    table = doc.Table(
        ("Copy", "Holdout accuracy", "Attack success rate"),
        (("clean", doc.fmt_number(details.get("clean_model_accuracy")), doc.fmt_number(details.get("success_rate_on_clean_model"))),
         ("poisoned", doc.fmt_number(details.get("poisoned_model_accuracy")), doc.fmt_number(details.get("attack_success_rate")))),
        "Accuracy and attack success of the clean and the poisoned copy",
        numeric=frozenset({1, 2}),
    )
    return [doc.Chart("Clean and poisoned copy", poisoning_bars(details), caption), table]


def model_extraction(details: Mapping[str, Any], reqs: Sequence[Any]) -> list[doc.Block]:
    """Fidelity against the query budget (chart and table)."""
    from amulet_audit.report import document as doc
    curve = details.get("curve") or []
    if not curve:
        return []
    maximum = next((r.threshold.value for r in reqs if r.metric == "fidelity" and r.threshold.op == "<="), None)
    target = details.get("target_accuracy")
    svg = fidelity_curve(curve, target_accuracy=target if charts._is_number(target) else None, maximum=maximum)
    caption = (f"The adversary queries the model with {details.get('source', 'its own inputs')}, sees the returned "
               f"{details.get('access', 'answers')} and trains a surrogate on them; fidelity and accuracy are measured on "
               "holdout records it never queried.")
    table = doc.Table(
        ("Queries", "Fidelity [CI]", "Surrogate accuracy", "n"),
        tuple((doc.fmt_number(p.get("queries")), doc.fmt_value_ci(p.get("fidelity"), p.get("ci")),
               doc.fmt_number(p.get("surrogate_accuracy")), doc.fmt_number(p.get("n")))
              for p in sorted(curve, key=lambda p: p.get("queries", 0))),
        "Fidelity and surrogate accuracy at each query budget",
        numeric=frozenset({0, 1, 2, 3}),
    )
    return [doc.Chart("Fidelity against query budget", svg, caption), table]


def evasion(details: Mapping[str, Any], reqs: Sequence[Any]) -> list[doc.Block]:
    """The robustness curve (document.py's builder) over the curve's ordinary budgets, and the gradient-masking
    check at the very large budget as its own table, so that far-away point does not squash the chart's axis."""
    from amulet_audit.report import document as doc

    curve = details.get("curve") or []
    checks = [p for p in curve if isinstance(p, Mapping) and p.get("check") == "large_eps"]
    blocks = doc._evasion({**details, "curve": [p for p in curve if p not in checks]}, reqs)
    if checks:
        blocks.append(doc.Table(
            ("ε", "Robust accuracy [CI]", "n", "Expected"),
            tuple((doc.fmt_number(p.get("eps")), doc.fmt_value_ci(p.get("robust_accuracy"), p.get("ci")),
                   doc.fmt_number(p.get("n")), "near 0") for p in checks),
            "Gradient-masking check: at a very large budget (the whole input range when known) a working attack fools "
            "nearly every record",
            numeric=frozenset({0, 1, 2}),
        ))
    return blocks
