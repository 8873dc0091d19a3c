"""Report evidence for the security risks: evasion (the robustness curve), poisoning and model extraction.

Builders take an attack run (its recorded `params` and `details`) and the requirements that read it, and return
charts and tables; every number is read from the results, never recomputed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from markupsafe import Markup

from amulet_audit.report import charts
from amulet_audit.report.format import fmt_number, fmt_value_ci
from amulet_audit.report.nodes import Block, Chart, Table
from amulet_audit.results.model import RequirementResult, Run


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


def poisoning(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """Clean vs poisoned copy: accuracy and attack success, as a chart and a table."""
    details = run.details
    if not any(k in details for k in ("clean_model_accuracy", "poisoned_model_accuracy")):
        return []
    fraction = details.get("fraction")
    caption = ("Both copies share the audited architecture, initialisation and training recipe; the poisoned one was "
               "trained with " + (f"{fraction:.0%} of its training records poisoned." if charts._is_number(fraction)
                                  else "poisoned training records."))
    table = Table(
        ("Copy", "Holdout accuracy", "Attack success rate"),
        (("clean", fmt_number(details.get("clean_model_accuracy")), fmt_number(details.get("success_rate_on_clean_model"))),
         ("poisoned", fmt_number(details.get("poisoned_model_accuracy")), fmt_number(details.get("attack_success_rate")))),
        "Accuracy and attack success of the clean and the poisoned copy",
        numeric=frozenset({1, 2}),
    )
    return [Chart("Clean and poisoned copy", poisoning_bars(details), caption), table]


def model_extraction(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """Fidelity against the query budget (chart and table)."""
    details = run.details
    curve = details.get("curve") or []
    if not curve:
        return []
    maximum = next((r.threshold.value for r in reqs if r.metric == "fidelity" and r.threshold.op == "<="), None)
    target = details.get("target_accuracy")
    svg = fidelity_curve(curve, target_accuracy=target if charts._is_number(target) else None, maximum=maximum)
    caption = (f"The adversary queries the model with {details.get('source', 'its own inputs')}, sees the returned "
               f"{details.get('access', 'answers')} and trains a surrogate on them; fidelity and accuracy are measured on "
               "holdout records it never queried.")
    table = Table(
        ("Queries", "Fidelity [CI]", "Surrogate accuracy", "n"),
        tuple((fmt_number(p.get("queries")), fmt_value_ci(p.get("fidelity"), p.get("ci")),
               fmt_number(p.get("surrogate_accuracy")), fmt_number(p.get("n")))
              for p in sorted(curve, key=lambda p: p.get("queries", 0))),
        "Fidelity and surrogate accuracy at each query budget",
        numeric=frozenset({0, 1, 2, 3}),
    )
    return [Chart("Fidelity against query budget", svg, caption), table]


def robustness(details: Mapping[str, Any], params: Mapping[str, Any], reqs: Sequence[RequirementResult]) -> list[Block]:
    """Robust accuracy against the perturbation budget (chart and table) from the run's recorded curve."""
    curve = details.get("curve") or []
    if not curve:
        return []
    eps = details.get("eps", params.get("eps"))
    norm = str(details.get("norm", params.get("norm", "linf")))
    minimum = next(
        (r.threshold.value for r in reqs if r.metric == "robust_accuracy" and r.threshold.op == ">="), None
    )
    svg = charts.robustness_curve(
        curve, eps=eps, norm=norm, clean_accuracy=details.get("clean_accuracy"), minimum=minimum
    )
    caption = (
        "Accuracy under attack as the perturbation budget grows; the band is the confidence interval "
        + (f"and the vertical line marks the policy's budget ε = {eps:g}." if eps is not None else "at each budget.")
    )
    rel = details.get("budget_relative_to_range")
    if details.get("eps_units"):
        caption += f" ε is in {details['eps_units']}"
        caption += (f"; as a share of each feature's holdout range it is {rel['median']:.2%} (median; {rel['min']:.2%} "
                    f"to {rel['max']:.2%} over {rel['features']} features)." if isinstance(rel, Mapping) else ".")
    table = Table(
        ("ε", "Robust accuracy [CI]", "n"),
        tuple(
            (fmt_number(p.get("eps")), fmt_value_ci(p.get("robust_accuracy"), p.get("ci")), fmt_number(p.get("n")))
            for p in sorted(curve, key=lambda p: p.get("eps", 0))
        ),
        "Robust accuracy at each perturbation budget",
        numeric=frozenset({0, 1, 2}),
    )
    return [Chart("Robust accuracy against perturbation budget", svg, caption), table]


def evasion(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """The robustness curve over the curve's ordinary budgets, and the gradient-masking check at the very large
    budget as its own table, so that far-away point does not squash the chart's axis."""
    details = run.details
    curve = details.get("curve") or []
    checks = [p for p in curve if isinstance(p, Mapping) and p.get("check") == "large_eps"]
    blocks = robustness({**details, "curve": [p for p in curve if p not in checks]}, run.params, reqs)
    if checks:
        blocks.append(Table(
            ("ε", "Robust accuracy [CI]", "n", "Expected"),
            tuple((fmt_number(p.get("eps")), fmt_value_ci(p.get("robust_accuracy"), p.get("ci")),
                   fmt_number(p.get("n")), "near 0") for p in checks),
            "Gradient-masking check: at a very large budget (the whole input range when known) a working attack fools "
            "nearly every record",
            numeric=frozenset({0, 1, 2}),
        ))
    return blocks
