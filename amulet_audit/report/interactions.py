"""The interaction matrix as the report shows it: heatmap, utility cost, one sentence per flagged interaction.

Everything is read from the AuditResult (interactions, defenses, requirements); nothing is recomputed."""

from __future__ import annotations

from dataclasses import dataclass

from amulet_audit.results.model import AuditResult, DefenseResult, Interaction


@dataclass(frozen=True)
class InteractionsView:
    intro: str
    heatmap: object  # inline SVG (Markup)
    sentences: tuple[str, ...]  # flagged unintended interactions, worst first
    utility: object  # Table
    table: object  # Table


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


def _change(i: Interaction, metric: str, fmt) -> str:
    verb = "raised" if i.delta > 0 else "lowered"
    return f"{verb} {metric} from {fmt(i.baseline)} to {fmt(i.defended)}"


def sentences(result: AuditResult, metric_label, fmt) -> tuple[str, ...]:
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
            head += f" {_change(h, f'{_risk(h)} {metric_label(h.metric)}', fmt)} (intended) but"
        parts = []
        for i in flagged:
            req = reqs.get(i.requirement)
            note = "unintended"
            if req is not None and i.defended_verdict != i.baseline_verdict:
                side = "below" if req.threshold.op == ">=" else "above"
                cite = f" cited from {req.cite[0]}" if req.cite else ""
                now = "now " + (f"{side} the {fmt(req.threshold.value)} threshold{cite}" if i.defended_verdict == "fail"
                                else f"{i.defended_verdict.replace('_', ' ')} against the {fmt(req.threshold.value)} threshold{cite}")
                note += f"; {now}"
            parts.append(f"{_change(i, metric_label(i.metric), fmt)} ({note})")
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
