"""AuditResult -> a typed document tree: everything a template shows, already formatted.

Templates only lay the tree out; every number here is taken from the results as recorded
(values, intervals, attack evidence), never recomputed, so it traces back to a metric, an
attack configuration and a seed. Risks this module does not know still get a section: their
requirement rows and the scalar entries of their attack details.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath
from typing import Any, Union

from markupsafe import Markup

from amulet_audit.report import charts, compliance
from amulet_audit.report import evidence_security
from amulet_audit.report import evidence_privacy
from amulet_audit.report import evidence_membership
from amulet_audit.results.model import AuditResult, RequirementResult, Threshold, Verdict


# --- the tree ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Badge:
    """A verdict or status mark: `key` selects the colour, `label` is the text (never colour alone)."""

    key: str
    label: str
    icon: str = ""


Cell = Union[str, Badge]


@dataclass(frozen=True)
class Field:
    label: str
    value: str
    mono: bool = False  # hashes and paths: monospace, may wrap anywhere


@dataclass(frozen=True)
class FieldGroup:
    title: str
    fields: tuple[Field, ...]


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    caption: str = ""
    numeric: frozenset[int] = frozenset()  # column indexes aligned right
    mono: frozenset[int] = frozenset()  # column indexes in monospace


@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup
    caption: str = ""


@dataclass(frozen=True)
class RequirementRow:
    id: str
    title: str
    risk: str
    risk_title: str
    severity: str
    cite: tuple[str, ...]
    metric: str  # readable name
    metric_id: str  # registry name, as in results.json
    value: str  # "0.823 [0.805, 0.840]" or "—"
    n: str
    threshold: str  # "≥ 0.60"
    verdict: Badge
    reason: str


Block = Union[Chart, Table]


@dataclass(frozen=True)
class Evidence:
    """What one attack run recorded: charts and tables in reading order, and its own warnings."""

    heading: str
    requirement_ids: tuple[str, ...]
    blocks: tuple[Block, ...]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class RiskSection:
    risk: str
    anchor: str
    title: str
    description: str
    verdict: Badge  # the worst verdict among its requirements
    rows: tuple[RequirementRow, ...]
    evidence: tuple[Evidence, ...]


@dataclass(frozen=True)
class Cover:
    title: str
    policy_title: str
    verdict: Badge
    verdict_text: str
    date: str
    facts: tuple[Field, ...]


@dataclass(frozen=True)
class Summary:
    counts: tuple[tuple[Badge, int], ...]
    rows: tuple[RequirementRow, ...]  # failed first, then by severity


@dataclass(frozen=True)
class Interactions:
    intro: str
    table: Table
    heatmap: "Chart | None" = None
    sentences: tuple[str, ...] = ()  # one per defense with flagged unintended interactions
    utility: Table | None = None  # clean accuracy before and after each defense


@dataclass(frozen=True)
class Methods:
    intro: str
    verdict_rules: tuple[tuple[Badge, str], ...]
    table: Table


@dataclass(frozen=True)
class Appendix:
    groups: tuple[FieldGroup, ...]
    tables: tuple[Table, ...]


@dataclass(frozen=True)
class SignOff:
    statement: str
    roles: tuple[str, ...] = ("Prepared by", "Reviewed by")
    fields: tuple[str, ...] = ("Name", "Position", "Date", "Signature")


@dataclass(frozen=True)
class Document:
    title: str
    running_title: str
    generator: str
    cover: Cover
    warnings: tuple[str, ...]
    summary: Summary
    sections: tuple[RiskSection, ...]
    interactions: Interactions | None
    methods: Methods
    appendix: Appendix
    signoff: SignOff
    contents: tuple[tuple[str, str], ...]  # (anchor, title) of each chapter
    traceability: "compliance.Traceability | None" = None
        *((Field("Model output", m.output_note or result.model_output),) if result.model_output else ()),
    test_log: "compliance.TestLog | None" = None
    recertification: "compliance.RecertificationView | None" = None


# --- vocabulary -------------------------------------------------------------------------------

VERDICT_BADGES: dict[str, Badge] = {
    Verdict.PASS.value: Badge("pass", "PASS", "✓"),
    Verdict.FAIL.value: Badge("fail", "FAIL", "✗"),
    Verdict.INDETERMINATE.value: Badge("indeterminate", "INDETERMINATE", "?"),
    Verdict.NOT_APPLICABLE.value: Badge("not_applicable", "NOT APPLICABLE", "–"),
}
_VERDICT_ORDER = ("fail", "indeterminate", "pass", "not_applicable")
_SEVERITY_ORDER = ("critical", "high", "medium", "low")

RISKS: dict[str, tuple[str, str]] = {
    "evasion": (
        "Evasion (adversarial examples)",
        "An attacker adds a small, deliberately crafted perturbation to an input so that the model's "
        "decision changes. The attack searches, within a budget ε measured in the stated norm, for the "
        "perturbation that most harms each test record; robust accuracy is the share of records still "
        "classified correctly. Higher is better.",
    ),
    "poisoning": (
        "Data poisoning",
        "An attacker who can insert or alter training records (flipped labels, backdoor triggers) steers "
        "the trained model. The model is re-trained on poisoned data and the attack's success and the "
        "loss of accuracy are recorded. Lower is better.",
    ),
    "model_extraction": (
        "Model extraction",
        "An attacker with query access trains a copy (a surrogate) of the model from its answers. "
        "Fidelity is the share of inputs on which the surrogate agrees with the model. Lower is better.",
    ),
    "membership_inference": (
        "Membership inference",
        "An attacker who sees the model's outputs tries to tell whether a given record was part of its "
        "training data, which itself discloses personal data. The ROC curve plots the share of training "
        "records (members) the attack finds against the share of other records (non-members) it flags by "
        "mistake. The region of few false positives, shown on logarithmic axes, is where an attack is "
        "credible; the diagonal is a random guess.",
    ),
    "attribute_inference": (
        "Attribute inference",
        "An attacker uses the model to infer a sensitive attribute of a record from its other features, "
        "beyond what the population prior already allows. Lower is better.",
    ),
    "data_reconstruction": (
        "Data reconstruction",
        "An attacker inverts the model to reconstruct inputs resembling its training records; the "
        "similarity of the reconstructions to the real records is measured. Lower is better.",
    ),
    "distribution_inference": (
        "Distribution inference",
        "An attacker infers aggregate properties of the training data, such as the share of a group, "
        "from the model. Distinguishing accuracy near 0.5 means the property stays hidden.",
    ),
    "discrimination": (
        "Discrimination (group fairness)",
        "Whether the model's decisions differ between groups defined by a sensitive attribute. The "
        "selection rate is the share of a group that receives the favourable outcome; true- and "
        "false-positive rates compare errors among those who do and do not merit it. Differences near 0 "
        "and an impact ratio near 1 indicate parity.",
    ),
}

METRICS: dict[str, str] = {
    "clean_accuracy": "Clean accuracy",
    "robust_accuracy": "Robust accuracy",
    "attack_success_rate": "Attack success rate",
    "accuracy_drop": "Accuracy drop",
    "fidelity": "Fidelity",
    "surrogate_accuracy": "Surrogate accuracy",
    "auc": "ROC AUC",
    "tpr_at_fpr_0.001": "TPR at 0.1 % FPR",
    "tpr_at_fpr_0.01": "TPR at 1 % FPR",
    "advantage": "Membership advantage",
    "balanced_accuracy": "Balanced accuracy",
    "advantage_over_prior": "Advantage over prior",
    "reconstruction_similarity": "Reconstruction similarity",
    "distinguishing_accuracy": "Distinguishing accuracy",
    "demographic_parity_difference": "Demographic parity difference",
    "impact_ratio": "Impact ratio",
    "equalized_odds_difference": "Equalized odds difference",
    "accuracy_gap": "Accuracy gap",
}

_LABELS: dict[str, str] = {
    "eps": "ε (perturbation budget)",
    "constraint_slack": "Constraint slack (Fairlearn eps)",
    "norm": "Norm",
    "n_members": "Members (training records) attacked",
    "n_nonmembers": "Non-members attacked",
    "attribute": "Sensitive attribute",
    "tpr": "TPR",
    "fpr": "FPR",
    **METRICS,
}


# --- formatting -------------------------------------------------------------------------------

DASH = "—"


def fmt_number(value: Any) -> str:
    """A measured value: 3 decimals; 2 significant digits below 0.01; integers as integers."""
    if value is None:
        return DASH
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0 or abs(value) >= 0.01:
            return f"{value:.3f}"
        return f"{value:.2g}" if abs(value) >= 1e-4 else f"{value:.1e}"
    return str(value)


def fmt_value_ci(value: float | None, ci: Sequence[float] | None) -> str:
    """'0.823 [0.805, 0.840]'; the interval is left out when absent."""
    if value is None:
        return DASH
    if ci is None or len(ci) != 2:
        return fmt_number(value)
    return f"{fmt_number(value)} [{fmt_number(ci[0])}, {fmt_number(ci[1])}]"


def fmt_threshold(threshold: Threshold) -> str:
    """'≥ 0.60': at least two decimals, more when the threshold needs them."""
    v = threshold.value
    text = f"{v:.2f}" if round(v, 2) == v else f"{v:g}"
    return f"{'≥' if threshold.op == '>=' else '≤'} {text}"


def fmt_delta(value: float) -> str:
    return f"{value:+.3f}"


def fmt_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"


def fmt_params(params: Mapping[str, Any]) -> str:
    """'eps=0.1, norm=linf, steps=40' in the order the policy gave them."""
    return ", ".join(f"{k}={_compact(v)}" for k, v in params.items()) or DASH


def label(key: str) -> str:
    """A readable label for a details or environment key."""
    if key in _LABELS:
        return _LABELS[key]
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def _compact(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return str(value)


def _date(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{moment.day} {moment:%B %Y}"


def _duration(started: str, finished: str) -> str:
    try:
        return fmt_seconds((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds())
    except (TypeError, ValueError):
        return DASH


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _scalar_table(entries: Mapping[str, Any], caption: str) -> Table | None:
    """A key/value table of the scalar entries of `entries` (nested values are left to other tables)."""
    rows = tuple((label(k), fmt_number(v)) for k, v in entries.items() if _is_scalar(v))
    return Table(("Quantity", "Value"), rows, caption, numeric=frozenset({1})) if rows else None


# --- requirement rows -------------------------------------------------------------------------


def _risk_title(risk: str) -> str:
    return RISKS[risk][0] if risk in RISKS else label(risk)


def _row(req: RequirementResult) -> RequirementRow:
    return RequirementRow(
        id=req.id,
        title=req.title or req.id,
        risk=req.risk,
        risk_title=_risk_title(req.risk),
        severity=req.severity,
        cite=tuple(req.cite),
        metric=METRICS.get(req.metric, label(req.metric)),
        metric_id=req.metric,
        value=fmt_value_ci(req.value, req.ci),
        n=fmt_number(req.n) if req.n else DASH,
        threshold=fmt_threshold(req.threshold),
        verdict=VERDICT_BADGES[req.verdict.value],
        reason=req.reason,
    )


def _priority(req: RequirementResult) -> tuple[int, int]:
    sev = req.severity.lower()
    return (
        _VERDICT_ORDER.index(req.verdict.value),
        _SEVERITY_ORDER.index(sev) if sev in _SEVERITY_ORDER else len(_SEVERITY_ORDER),
    )


def _worst(reqs: Iterable[RequirementResult]) -> Badge:
    """The section verdict: any fail, else any indeterminate, else pass (N/A only if all are)."""
    verdicts = {r.verdict.value for r in reqs}
    for key in ("fail", "indeterminate", "pass"):
        if key in verdicts:
            return VERDICT_BADGES[key]
    return VERDICT_BADGES["not_applicable"]


# --- attack evidence --------------------------------------------------------------------------

# Per risk: (details, requirements sharing that run) -> charts and tables for its structured keys.
# Scalar entries are always shown by the generic table, so a builder handles only the rest.
EvidenceBuilder = Callable[[Mapping[str, Any], Sequence[RequirementResult]], list[Block]]


def _evasion(details: Mapping[str, Any], reqs: Sequence[RequirementResult]) -> list[Block]:
    curve = details.get("curve") or []
    if not curve:
        return []
    params = reqs[0].params
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


_GROUP_COLUMNS = (("count", "Count"), ("selection_rate", "Selection rate"), ("tpr", "TPR"), ("fpr", "FPR"),
                  ("accuracy", "Accuracy"))


def _discrimination(details: Mapping[str, Any], reqs: Sequence[RequirementResult]) -> list[Block]:
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
                    f"Per-group counts and rates ({attribute})",
                    numeric=frozenset(range(1, len(_GROUP_COLUMNS) + 1)),
                )
            )
        disparities = _scalar_table(entry, f"Disparity between {attribute} groups")
        if disparities:
            blocks.append(disparities)
    return blocks + compliance.bias_audit_blocks(details)


EVIDENCE: dict[str, EvidenceBuilder] = {
    "evasion": evidence_security.evasion,
    "membership_inference": evidence_membership.run_evidence,
    "discrimination": _discrimination,
    "poisoning": evidence_security.poisoning,
    "model_extraction": evidence_security.model_extraction,
    "attribute_inference": evidence_privacy.attribute_inference,
    "data_reconstruction": evidence_privacy.data_reconstruction,
    "distribution_inference": evidence_privacy.distribution_inference,
}


def _evidence(reqs: Sequence[RequirementResult]) -> Evidence:
    """The evidence of one attack run, shared by the requirements in `reqs`."""
    first = reqs[0]
    details = first.details
    warnings = details.get("warnings")
    notes = [str(w) for w in warnings if w] if isinstance(warnings, list) else []
    blocks: list[Block] = []
    builder = EVIDENCE.get(first.risk)
    if builder:
        # Evidence that does not have the recorded shape must not stop the report from rendering.
        try:
            blocks += builder(details, reqs)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            notes.append(f"The recorded evidence could not be charted ({type(exc).__name__}: {exc}).")
    scalars = _scalar_table(details, "Recorded results of the attack run")
    if scalars:
        blocks.append(scalars)
    heading = f"{first.attack} attack" + (f" ({fmt_params(first.params)})" if first.params else "")
    return Evidence(heading, tuple(r.id for r in reqs), tuple(blocks), tuple(notes))


def _runs(reqs: Sequence[RequirementResult]) -> list[list[RequirementResult]]:
    """Requirements grouped by the attack run that produced them (same attack, params and details)."""
    groups: dict[str, list[RequirementResult]] = {}
    for r in reqs:
        if not r.details:
            continue
        key = json.dumps([r.attack, r.params, r.details], sort_keys=True, default=str)
        groups.setdefault(key, []).append(r)
    return list(groups.values())


# Per risk: every run of a section -> one Evidence shown before the runs' own (e.g. all ROC curves on one chart).
SECTION_EVIDENCE: dict[str, Callable[[Sequence[Sequence[RequirementResult]]], Union[Evidence, None]]] = {
    "membership_inference": evidence_membership.combined_roc,
}


def _section_evidence(risk: str, runs: Sequence[Sequence[RequirementResult]]) -> tuple[Evidence, ...]:
    builder = SECTION_EVIDENCE.get(risk)
    try:
        combined = builder(runs) if builder and runs else None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        combined = None  # malformed evidence must not stop the report; each run still shows its own
    return (combined,) if combined else ()


def _section(risk: str, reqs: Sequence[RequirementResult]) -> RiskSection:
    title, description = RISKS.get(risk, (label(risk), "Requirements measured for this risk by the attacks listed."))
    return RiskSection(
        risk=risk,
        anchor=f"risk-{risk}",
        title=title,
        description=description,
        verdict=_worst(reqs),
        rows=tuple(_row(r) for r in reqs),
        evidence=_section_evidence(risk, _runs(reqs)) + tuple(_evidence(run) for run in _runs(reqs)),
    )


# --- the other parts --------------------------------------------------------------------------


def _regulation(regulation: Mapping[str, Any]) -> str:
    if not regulation:
        return DASH
    name = str(regulation.get("name", ""))
    rest = [f"{label(k).lower()} {v}" for k, v in regulation.items() if k != "name" and _is_scalar(v)]
    return f"{name} ({', '.join(rest)})" if name and rest else name or ", ".join(rest)


def _cover(result: AuditResult) -> Cover:
    reqs = result.requirements
    counts = {v: sum(r.verdict.value == v for r in reqs) for v in _VERDICT_ORDER}
    total = len(reqs)
    if result.verdict == "pass":
        text = f"The model meets every applicable requirement of this policy ({counts['pass']} of {total})."
    elif result.verdict == "fail":
        text = f"The model does not meet {counts['fail']} of the {total} requirements of this policy."
        if counts["indeterminate"]:
            text += f" {counts['indeterminate']} more could not be decided from the evidence."
    else:
        text = (
            f"No requirement failed, but {counts['indeterminate']} of {total} could not be decided from the "
            "evidence; the model has not been shown to meet this policy."
        )
    if counts["not_applicable"]:
        text += f" {counts['not_applicable']} did not apply to this model and data."
    m, d, p = result.model, result.data, result.policy
    facts = (
        Field("Model", m.path, mono=True),
        Field("Model SHA-256", m.sha256, mono=True),
        Field("Model format", f"{m.format}, {m.parameters:,} parameters" + (f", {m.architecture}" if m.architecture else "")),
        Field("Data", (f"{d.name} — " if d.name else "") + d.path, mono=not d.name),
        Field("Data records", f"{d.n_train:,} training, {d.n_holdout:,} held out"),
        Field("Policy", f"{p.title} ({p.id})"),
        Field("Regulation", str(p.regulation.get("name", "")) if p.regulation else DASH),
        Field("Regulation status", compliance.regulation_status(p.regulation, result.finished_at)),
        Field("Recertification", compliance.recertification_text(result)),
        Field("Audit profile", f"{result.profile}, seed {result.seed}, {_percent(result.confidence)} confidence"),
        Field("Audit completed", result.finished_at),
        Field("Tool", f"{result.tool.name} {result.tool.version}"),
    )
    return Cover(
        title="Model audit report",
        policy_title=p.title,
        verdict=VERDICT_BADGES[result.verdict],
        verdict_text=text,
        date=_date(result.finished_at),
        facts=facts,
    )


def _percent(confidence: float) -> str:
    return f"{confidence * 100:g} %"


def _summary(result: AuditResult) -> Summary:
    ordered = sorted(result.requirements, key=_priority)
    counts = tuple(
        (VERDICT_BADGES[v], n)
        for v in _VERDICT_ORDER
        if (n := sum(r.verdict.value == v for r in result.requirements))
    )
    return Summary(counts, tuple(_row(r) for r in ordered))


def _interactions(result: AuditResult) -> Interactions | None:
    from amulet_audit.report import interactions as view

    items = result.interactions
    if not items:
        return None
    rows = tuple(
        (
            i.defense,
            _risk_title(i.risk) + (f" ({i.requirement})" if i.requirement else ""),
            METRICS.get(i.metric, label(i.metric)),
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
            (view.defense_label(d), ", ".join(_risk_title(r) for r in d.intended), fmt_number(d.clean_accuracy_before),
             fmt_number(d.clean_accuracy_after),
             fmt_delta(d.clean_accuracy_after - d.clean_accuracy_before)
             if d.clean_accuracy_after is not None and d.clean_accuracy_before is not None else DASH,
             "; ".join(f"{label(k)} {fmt_number(v) if _is_scalar(v) and not isinstance(v, str) else v}"
                       for k, v in d.details.items() if _is_scalar(v) and k != "clean_accuracy")[:300] or DASH,
             fmt_seconds(d.seconds))
            for d in result.defenses if not d.not_applicable
        ) + tuple(
            (view.defense_label(d), ", ".join(_risk_title(r) for r in d.intended), DASH, DASH, DASH,
             f"not applicable: {d.not_applicable}", DASH)
            for d in result.defenses if d.not_applicable
        ),
        "Utility cost of each defense (holdout accuracy of the audited and the defended model)",
        numeric=frozenset({2, 3, 4, 6}),
    )
    defenses, columns, cells = view.heatmap_cells(result)
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
        sentences=view.sentences(result, _lower_label, fmt_number), utility=utility,
    )


def _lower_label(metric: str) -> str:
    """A metric's name inside a sentence: "Robust accuracy" -> "robust accuracy", "ROC AUC" stays."""
    text = METRICS.get(metric, label(metric))
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


def _methods(result: AuditResult) -> Methods:
    intro = (
        f"Every value in this report was produced by the attack and configuration listed below, with the "
        f"“{result.profile}” attack profile and random seed {result.seed}. Intervals are "
        f"{_percent(result.confidence)} confidence intervals (exact binomial for rates, bootstrap "
        "otherwise); n is the number of records the value was measured on."
    )
    rules = (
        (VERDICT_BADGES["pass"], "the whole confidence interval lies on the required side of the threshold."),
        (VERDICT_BADGES["fail"], "the measured value lies on the wrong side of the threshold."),
        (VERDICT_BADGES["indeterminate"], "the interval straddles the threshold, or the sample is too small "
                                          "for the metric."),
        (VERDICT_BADGES["not_applicable"], "the requirement cannot be measured for this model or data; the "
                                           "reason is stated."),
    )
    table = Table(
        ("Requirement", "Risk", "Attack", "Metric", "Parameters", "n"),
        tuple(
            (r.id, _risk_title(r.risk), r.attack, r.metric, fmt_params(r.params), fmt_number(r.n) if r.n else DASH)
            for r in result.requirements
        ),
        "Attack configuration per requirement",
        numeric=frozenset({5}),
        mono=frozenset({0, 2, 3, 4}),
    )
    return Methods(intro, rules, table)


def _appendix(result: AuditResult) -> Appendix:
    m, d, p = result.model, result.data, result.policy
    groups = (
        FieldGroup("Audited artefacts", (
            Field("Model file", m.path, mono=True),
            Field("Model SHA-256", m.sha256, mono=True),
            Field("Data specification", d.path, mono=True),
            Field("Data specification SHA-256", d.sha256, mono=True),
            Field("Policy", p.path or p.id, mono=True),
            Field("Policy SHA-256", p.sha256, mono=True),
        )),
        FieldGroup("Run", (
            Field("Tool", f"{result.tool.name} {result.tool.version}"),
            Field("Results schema", result.schema_version),
            Field("Seed", str(result.seed)),
            Field("Profile", result.profile),
            Field("Confidence level", _percent(result.confidence)),
            Field("Started", result.started_at),
            Field("Finished", result.finished_at),
            Field("Duration", _duration(result.started_at, result.finished_at)),
        )),
    )
    tables: list[Table] = []
    if d.files:
        tables.append(Table(("Data file", "SHA-256"), tuple(d.files.items()), "Data files read",
                            mono=frozenset({0, 1})))
    env = _scalar_table(result.environment, "Environment")
    if env:
        tables.append(Table(("Component", "Version"), env.rows, env.caption))
    for key, value in result.environment.items():
        if isinstance(value, Mapping) and value:
            tables.append(Table(("Name", "Value"), tuple((str(k), _compact(v)) for k, v in value.items()),
                                f"Environment: {label(key).lower()}", mono=frozenset({0, 1})))
    if result.timings:
        tables.append(Table(("Step", "Time"), tuple((k, fmt_seconds(v)) for k, v in result.timings.items()),
                            "Timings", numeric=frozenset({1})))
    return Appendix(groups, tuple(tables))


def build_document(result: AuditResult) -> Document:
    """Turn an audit result into the document tree the report templates lay out."""
    by_risk: dict[str, list[RequirementResult]] = {}
    for r in result.requirements:
        by_risk.setdefault(r.risk, []).append(r)
    sections = tuple(_section(risk, reqs) for risk, reqs in by_risk.items())
    interactions = _interactions(result)
    recertification = compliance.recertification(result)
    contents = (
        ("summary", "Executive summary"),
        *((("recertification", "Recertification"),) if recertification else ()),
        *((s.anchor, s.title) for s in sections),
        *((("interactions", "Unintended interactions between defenses"),) if interactions else ()),
        ("methods", "Methods"),
        ("traceability", "Traceability to the regulation"),
        ("testlog", "Test log"),
        ("appendix", "Reproducibility appendix"),
        ("signoff", "Sign-off"),
    )
    model_name = PurePath(result.model.path).name or result.model.path
    return Document(
        title=f"Model audit report — {model_name} — {result.policy.id}",
        running_title=f"{model_name} · {result.policy.id}",
        generator=f"{result.tool.name} {result.tool.version}",
        cover=_cover(result),
        warnings=tuple(result.model.warnings) + tuple(result.report_warnings),
        summary=_summary(result),
        sections=sections,
        interactions=interactions,
        methods=_methods(result),
        appendix=_appendix(result),
        signoff=SignOff(
            "By signing, the preparer and the reviewer confirm that they have read this report and the "
            "evidence it is based on, and that the artefacts audited are those identified by the SHA-256 "
            "digests in the reproducibility appendix."
        ),
        contents=contents,
        traceability=compliance.traceability(result),
        test_log=compliance.test_log(result),
        recertification=recertification,
    )
