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
    """A defense with its decisive parameter, e.g. "DP-SGD (ε = 3)"; a combination joins its parts' labels with
    " + "."""
    if d.parts:
        return " + ".join(defense_label(DefenseResult(name=p, params=d.params.get(p) or {})) for p in d.parts)
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
    return _sentences(result, lambda i: i.flagged, lambda i: "unintended")


def possible_sentences(result: AuditResult) -> tuple[str, ...]:
    """One plain sentence per defense with possible worsenings: beyond the tolerance, but with an interval for the
    change that includes zero or a p-value that does not survive the false discovery rate control."""
    return _sentences(result, lambda i: i.possible, _why_possible)


def _why_possible(i: Interaction) -> str:
    if i.delta_ci is not None and i.delta_ci[0] <= 0 <= i.delta_ci[1]:
        return f"unintended, possible: its interval [{fmt_delta(i.delta_ci[0])}, {fmt_delta(i.delta_ci[1])}] includes 0"
    if i.delta_ci is None:
        return "unintended, possible: no interval for the change"
    return (f"unintended, possible: adjusted p = {fmt_p(i.p_adjusted)} does not survive the "
            f"{fmt_rate(i.fdr)} false discovery rate")


def _sentences(result: AuditResult, pick, why) -> tuple[str, ...]:
    reqs = {r.id: r for r in result.requirements}
    out = []
    for d in result.defenses:
        rows = [i for i in result.interactions if i.defense == d.name]
        picked = sorted((i for i in rows if pick(i)), key=lambda i: -abs(i.delta))
        if not picked:
            continue
        helped = sorted((i for i in rows if i.intended and not i.worse and i.delta != 0), key=lambda i: -abs(i.delta))
        head = defense_label(d)
        if helped:
            h = helped[0]
            head += f" {_change(h, f'{_risk(h)} {metric_in_sentence(h.metric)}')} (intended) but"
        parts = []
        for i in picked:
            req = reqs.get(i.requirement)
            note = why(i)
            if req is not None and i.defended_verdict != i.baseline_verdict:
                side = "below" if req.threshold.op == ">=" else "above"
                cite = f" cited from {req.cite[0]}" if req.cite else ""
                now = "now " + (f"{side} the {fmt_number(req.threshold.value)} threshold{cite}" if i.defended_verdict == "fail"
                                else f"{i.defended_verdict.replace('_', ' ')} against the {fmt_number(req.threshold.value)} threshold{cite}")
                note += f"; {now}"
            parts.append(f"{_change(i, metric_in_sentence(i.metric))} ({note})")
        out.append(f"{head} {_join(parts)}.")
    return tuple(out)


def _facts(d: DefenseResult) -> str:
    """A defense's scalar details in a line (a combination's: each part's, after its name), at most 300 characters."""
    def line(details: dict) -> str:
        return "; ".join(f"{label(k)} {fmt_number(v) if is_scalar(v) and not isinstance(v, str) else v}"
                         for k, v in details.items() if is_scalar(v) and k != "clean_accuracy")

    if d.parts:
        text = "Trained in one procedure. " + " ".join(
            f"{defense_label(DefenseResult(name=p, params=d.params.get(p) or {}))}: {line(d.details.get(p) or {})}."
            for p in d.parts)
    else:
        text = line(d.details)
    return text[:300] or DASH


def combined_sentences(result: AuditResult) -> tuple[str, ...]:
    """One sentence per (combination, defense alone) where combining undid what the defense achieved alone: the
    combination is flagged worse than that defense alone on a risk it is meant for."""
    labels = {d.name: defense_label(d) for d in result.defenses}
    out = []
    for i in sorted((i for i in result.combined if i.flagged), key=lambda i: -abs(i.delta)):
        out.append(f"{labels.get(i.defense, i.defense)} undid part of what {labels.get(i.versus, i.versus)} achieved "
                   f"alone: {_change(i, f'{_risk(i)} {metric_in_sentence(i.metric)}')}"
                   + (f" [{fmt_delta(i.delta_ci[0])}, {fmt_delta(i.delta_ci[1])}]" if i.delta_ci else "") + ".")
    return tuple(out)


def combined_table(result: AuditResult) -> Table | None:
    """Each combination against each of its defenses alone, on the requirements that defense is meant for."""
    if not result.combined:
        return None
    labels = {d.name: defense_label(d) for d in result.defenses}
    rows = tuple(
        (labels.get(i.defense, i.defense), labels.get(i.versus, i.versus),
         f"{i.requirement or risk_title(i.risk)}: {metric_name(i.metric)}", fmt_number(i.baseline), fmt_number(i.defended),
         fmt_delta(i.delta) + (f" [{fmt_delta(i.delta_ci[0])}, {fmt_delta(i.delta_ci[1])}]" if i.delta_ci else "")
         + ("†" if i.delta_ci and i.delta_ci_method == "normal approximation" else ""),
         fmt_p(i.p_value) + (f" ({fmt_p(i.p_adjusted)})" if i.p_adjusted is not None else ""),
         Badge("fail", "UNDONE", "!") if i.flagged else _status(i))
        for i in sorted(result.combined, key=lambda i: (not i.flagged, not i.possible, i.defense, i.versus))
    )
    return Table(
        ("Combination", "Versus alone", "Requirement: metric", "Alone", "Combined", "Change [CI]", "p (adjusted)",
         "Status"),
        rows,
        "Each combination of defenses against each of its defenses applied alone, on the risks that defense is "
        "meant for: a change for the worse beyond the tolerance, with an interval that excludes zero and surviving "
        "Benjamini–Hochberg over these rows, means combining undid what the defense achieved alone (UNDONE)",
        numeric=frozenset({3, 4, 5, 6}),
    )


def fmt_p(p: float | None) -> str:
    """A p-value: "—" when none; "≈ 0" when no bootstrap replicate fell on the other side."""
    if p is None:
        return DASH
    if p == 0:
        return "≈ 0"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def fmt_rate(rate: float | None) -> str:
    return DASH if rate is None else f"{100 * rate:g}%"


def _status(i: Interaction) -> Badge:
    if i.flagged:
        return Badge("fail", "FLAGGED", "!")
    if i.possible:
        return Badge("indeterminate", "POSSIBLE", "?")
    return Badge("pass", "WITHIN TOLERANCE", "✓")


def _risk(i: Interaction) -> str:
    return i.risk.replace("_", "-")


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def heatmap_cells(result: AuditResult) -> tuple[list[str], list[str], dict]:
    """(column names, row names, cells) of the interaction heatmap: a column per defense and per combination (its
    name spaced at the "+", so that it wraps between the defenses), a row per requirement."""
    def column(name: str) -> str:
        return name.replace("+", " + ")

    defenses = list(dict.fromkeys([column(d.name) for d in result.defenses if not d.not_applicable]
                                  + [column(i.defense) for i in result.interactions]))
    rows = [r.id for r in result.requirements if any(i.requirement == r.id for i in result.interactions)]
    cells = {
        (column(i.defense), i.requirement): {"delta": i.delta, "harm": abs(i.delta) if i.worse else -abs(i.delta),
                                     "intended": i.intended, "flagged": i.flagged, "possible": i.possible}
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
            fmt_p(i.p_value) + (f" ({fmt_p(i.p_adjusted)})" if i.p_adjusted is not None else ""),
            "yes" if i.intended else "no",
            _status(i),
        )
        for i in sorted(items, key=lambda i: (not i.flagged, not i.possible, i.defense, i.risk))
    )
    table = Table(
        ("Defense", "Risk (requirement)", "Metric", "Baseline", "Defended", "Change [CI]", "p (adjusted)", "Intended",
         "Status"),
        rows,
        "Effect of each defense on every measured requirement. Change intervals are paired bootstraps over the "
        "records both models were measured on; † marks a metric without a per-record sample, whose interval "
        "combines the two measurements' intervals (normal approximation). p: one-sided p-value that the change "
        "is for the worse, from the same bootstrap replicates (normal approximation for †; ≈ 0: no replicate on "
        "the other side); in brackets, Benjamini–Hochberg adjusted over every unintended change (intended changes "
        "are not tested)",
        numeric=frozenset({3, 4, 5, 6}),
        mono=frozenset({0}),
    )
    utility = Table(
        ("Defense", "Meant for", "Clean accuracy before", "after", "Change", "Key facts", "Time"),
        tuple(
            (defense_label(d), ", ".join(risk_title(r) for r in d.intended), fmt_number(d.clean_accuracy_before),
             fmt_number(d.clean_accuracy_after),
             fmt_delta(d.clean_accuracy_after - d.clean_accuracy_before)
             if d.clean_accuracy_after is not None and d.clean_accuracy_before is not None else DASH,
             _facts(d),
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
    tested = [i for i in items if i.p_adjusted is not None]
    rate = next((i.fdr for i in items if i.fdr is not None), None)
    if rate is not None:
        rule = (
            f"requirement the defense is not meant for is flagged when it is larger than the policy's tolerance of "
            f"{fmt_number(tolerance)}, its interval excludes zero on the worse side, and it survives the "
            f"Benjamini–Hochberg procedure at a false discovery rate of {fmt_rate(rate)}, applied to the one-sided "
            f"p-values of all {len(tested)} unintended changes tested (every defense × requirement pair the defense "
            "is not meant for; the changes on risks a defense is meant for are not worsenings and are not tested). "
            "A change beyond the tolerance that fails either test is a possible worsening, listed apart and not "
            "flagged"
        )
    else:  # results written before flags controlled the false discovery rate
        rule = (f"requirement the defense is not meant for, larger than the policy's tolerance of "
                f"{fmt_number(tolerance)} or turning its verdict worse, is flagged")
    intro = (
        "Each defense was applied to a fresh copy of the model, which was re-trained and audited again with the "
        "same attacks, seeds and budgets (EU AI Act Art. 9(4): effects and possible interactions of combined "
        f"measures). A defense can lower the risk it targets and raise another: a change for the worse on a {rule}. "
        "In the heatmap, red means the risk grew and blue that it shrank; framed cells are the risks a defense is "
        "meant for; “!” marks a flagged interaction" + (" and “?” a possible one." if rate is not None else ".")
    )
    return Interactions(
        intro, table, combined=combined_table(result), combined_sentences=combined_sentences(result),
        notes=tuple(f"{defense_label(d)}: {w}" for d in result.defenses for w in d.warnings),
        heatmap=Chart("Requirement × defense: signed change of each requirement's metric",
                      charts.interaction_heatmap(defenses, columns, cells),
                      "Cell text: defended minus baseline value, in the metric's own units."),
        sentences=sentences(result), possible=possible_sentences(result), utility=utility,
    )
