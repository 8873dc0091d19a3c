"""The interaction matrix as the report shows it: the chapter's table, heatmap, utility cost and one sentence
per defense with flagged interactions.

Everything is read from the AuditResult (interactions, defenses, requirements); nothing is recomputed."""

from __future__ import annotations

from amulet_audit.report import charts
from amulet_audit.report.format import (
    DASH, fmt_delta, fmt_number, fmt_seconds, is_scalar, label, metric_in_sentence, metric_name, risk_title,
)
from amulet_audit.report.nodes import Badge, Chart, Interactions, Table
from amulet_audit.results.model import AuditResult, DefenseResult, Interaction


_NAMES = {
    "adversarial_training": "Adversarial training",
    "dp_sgd": "DP-SGD",
    "outlier_removal": "Outlier removal",
    "fairness_mitigation": "Fairness mitigation",
    "output_perturbation": "Output perturbation",
    "watermarking": "Watermarking",
}


def defense_label(d: DefenseResult) -> str:
    """A defense with its decisive parameter, e.g. "DP-SGD (ε = 3)"."""
    name = _NAMES.get(d.name, d.description or d.name)
    if d.name == "dp_sgd" and "epsilon" in d.params:
        return f"{name} (ε = {d.params['epsilon']:g})"
    if d.name == "adversarial_training" and "eps" in d.params:
        return f"{name} (ε = {d.params['eps']:g}, {d.params.get('norm', 'linf')})"
    return name


def _change(i: Interaction, metric: str) -> str:
    verb = "raised" if i.delta > 0 else "lowered"
    return f"{verb} {metric} from {fmt_number(i.baseline)} to {fmt_number(i.defended)}"


def sentences(result: AuditResult) -> tuple[str, ...]:
    """One plain sentence per defense with flagged interactions, naming its intended effect first."""
    reqs = {r.id: r for r in result.requirements}
    out = []
    for d in result.defenses:
        rows = [i for i in result.interactions if i.defense == d.name]
        flagged = sorted((i for i in rows if i.flagged), key=lambda i: -abs(i.delta))
        if not flagged:
            continue
        helped = sorted((i for i in rows if i.intended and not i.worse and i.delta != 0), key=lambda i: -abs(i.delta))
        head = defense_label(d)
        if helped:
            h = helped[0]
            head += f" {_change(h, f'{_risk(h)} {metric_in_sentence(h.metric)}')} (intended) but"
        parts = []
        for i in flagged:
            req = reqs.get(i.requirement)
            note = "unintended"
            if req is not None and i.defended_verdict != i.baseline_verdict:
                side = "below" if req.threshold.op == ">=" else "above"
                cite = f" cited from {req.cite[0]}" if req.cite else ""
                now = "now " + (f"{side} the {fmt_number(req.threshold.value)} threshold{cite}" if i.defended_verdict == "fail"
                                else f"{i.defended_verdict.replace('_', ' ')} against the {fmt_number(req.threshold.value)} threshold{cite}")
                note += f"; {now}"
            parts.append(f"{_change(i, metric_in_sentence(i.metric))} ({note})")
        out.append(f"{head} {_join(parts)}.")
    return tuple(out)


def _risk(i: Interaction) -> str:
    return i.risk.replace("_", "-")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def heatmap_cells(result: AuditResult) -> tuple[list[str], list[str], dict]:
    defenses = list(dict.fromkeys([d.name for d in result.defenses if not d.not_applicable]
                                  + [i.defense for i in result.interactions]))
    rows = [r.id for r in result.requirements if any(i.requirement == r.id for i in result.interactions)]
    cells = {
        (i.defense, i.requirement): {"delta": i.delta, "harm": abs(i.delta) if i.worse else -abs(i.delta),
                                     "intended": i.intended, "flagged": i.flagged}
        for i in result.interactions
    }
    return defenses, rows, cells


def chapter(result: AuditResult) -> Interactions | None:
    """The interactions chapter: None when the audit applied no defense."""
    items = result.interactions
    if not items:
        return None
    rows = tuple(
        (
            i.defense,
            risk_title(i.risk) + (f" ({i.requirement})" if i.requirement else ""),
            metric_name(i.metric),
            fmt_number(i.baseline),
            fmt_number(i.defended),
            f"{fmt_delta(i.delta)}" + (f" [{fmt_delta(i.delta_ci[0])}, {fmt_delta(i.delta_ci[1])}]" if i.delta_ci else "")
            + ("†" if i.delta_ci and i.delta_ci_method == "normal approximation" else "")
            + f" ({'worse' if i.worse else 'not worse'})",
            "yes" if i.intended else "no",
            Badge("fail", "FLAGGED", "!") if i.flagged else Badge("pass", "WITHIN TOLERANCE", "✓"),
        )
        for i in sorted(items, key=lambda i: (not i.flagged, i.defense, i.risk))
    )
    table = Table(
        ("Defense", "Risk (requirement)", "Metric", "Baseline", "Defended", "Change [CI]", "Intended", "Status"),
        rows,
        "Effect of each defense on every measured requirement. Change intervals are paired bootstraps over the "
        "records both models were measured on; † marks a metric without a per-record sample, whose interval "
        "combines the two measurements' intervals (normal approximation)",
        numeric=frozenset({3, 4, 5}),
        mono=frozenset({0}),
    )
    utility = Table(
        ("Defense", "Meant for", "Clean accuracy before", "after", "Change", "Key facts", "Time"),
        tuple(
            (defense_label(d), ", ".join(risk_title(r) for r in d.intended), fmt_number(d.clean_accuracy_before),
             fmt_number(d.clean_accuracy_after),
             fmt_delta(d.clean_accuracy_after - d.clean_accuracy_before)
             if d.clean_accuracy_after is not None and d.clean_accuracy_before is not None else DASH,
             "; ".join(f"{label(k)} {fmt_number(v) if is_scalar(v) and not isinstance(v, str) else v}"
                       for k, v in d.details.items() if is_scalar(v) and k != "clean_accuracy")[:300] or DASH,
             fmt_seconds(d.seconds))
            for d in result.defenses if not d.not_applicable
        ) + tuple(
            (defense_label(d), ", ".join(risk_title(r) for r in d.intended), DASH, DASH, DASH,
             f"not applicable: {d.not_applicable}", DASH)
            for d in result.defenses if d.not_applicable
        ),
        "Utility cost of each defense (holdout accuracy of the audited and the defended model)",
        numeric=frozenset({2, 3, 4, 6}),
    )
    defenses, columns, cells = heatmap_cells(result)
    tolerance = items[0].tolerance
    intro = (
        "Each defense was applied to a fresh copy of the model, which was re-trained and audited again with the "
        "same attacks, seeds and budgets (EU AI Act Art. 9(4): effects and possible interactions of combined "
        "measures). A defense can lower the risk it targets and raise another: a change for the worse on a "
        f"requirement the defense is not meant for, larger than the policy's tolerance of {fmt_number(tolerance)} "
        "or turning its verdict worse, is flagged. In the heatmap, red means the risk grew and blue that it "
        "shrank; framed cells are the risks a defense is meant for; “!” marks a flagged interaction."
    )
    return Interactions(
        intro, table,
        heatmap=Chart("Requirement × defense: signed change of each requirement's metric",
                      charts.interaction_heatmap(defenses, columns, cells),
                      "Cell text: defended minus baseline value, in the metric's own units."),
        sentences=sentences(result), utility=utility,
    )
