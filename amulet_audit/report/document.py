"""AuditResult -> a typed document tree (report/nodes.py): everything a template shows, already formatted.

This module only assembles: node types live in nodes.py, formatting and vocabulary in format.py, each risk's
evidence in evidence_*.py, the interactions chapter in interactions.py and the regulator-facing parts in
compliance.py; none of them imports this module. Every number is taken from the results as recorded (values,
intervals, the runs' evidence), never recomputed, so it traces back to a metric, an attack run (its id in
results.json) and a seed. Risks this module does not know still get a section: their requirement rows and the
scalar entries of their runs' details.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import PurePath
from typing import Union

from amulet_audit.core.verdict import ORDER, combine
from amulet_audit.report import compliance, evidence_fairness, evidence_membership, evidence_privacy, evidence_security
from amulet_audit.report.evidence_controls import controls_evidence
from amulet_audit.report.compliance import recertification_text, regulation_status
from amulet_audit.report.format import (
    DASH, RISKS, VERDICT_BADGES, compact, date, duration, fmt_number, fmt_params, fmt_seconds, fmt_threshold,
    fmt_value_ci, label, metric_name, percent, risk_title, scalar_table,
)
from amulet_audit.report.interactions import chapter as interactions_chapter
from amulet_audit.report.nodes import (
    Appendix, Badge, Block, Cover, Document, Evidence, Field, FieldGroup, Methods, RequirementRow, RiskSection,
    SignOff, Summary, Table,
)
from amulet_audit.results.model import AuditResult, RequirementResult, Run

_SEVERITY_ORDER = ("critical", "high", "medium", "low")


# --- requirement rows -------------------------------------------------------------------------


def _row(req: RequirementResult) -> RequirementRow:
    return RequirementRow(
        id=req.id,
        title=req.title or req.id,
        risk=req.risk,
        risk_title=risk_title(req.risk),
        severity=req.severity,
        cite=tuple(req.cite),
        metric=metric_name(req.metric),
        metric_id=req.metric,
        value=fmt_value_ci(req.value, req.ci),
        n=fmt_number(req.n) if req.n else DASH,
        threshold=fmt_threshold(req.threshold),
        verdict=VERDICT_BADGES[req.verdict.value],
        reason=req.reason,
        notes=tuple(w for w in req.warnings if w not in req.reason),
    )


def _priority(req: RequirementResult) -> tuple[int, int]:
    """Worst verdict first (core.verdict.ORDER), then by severity."""
    sev = req.severity.lower()
    return (
        ORDER.index(req.verdict),
        _SEVERITY_ORDER.index(sev) if sev in _SEVERITY_ORDER else len(_SEVERITY_ORDER),
    )


def _section_verdict(reqs: Iterable[RequirementResult]) -> Badge:
    """The section's verdict by the audit's own rule (core.verdict.combine): FAIL if any requirement fails, PASS
    only if every one passes, NOT APPLICABLE if none applies, INDETERMINATE otherwise."""
    return VERDICT_BADGES[combine(r.verdict for r in reqs).value]


# --- attack evidence --------------------------------------------------------------------------

# Per risk: (the run, the requirements reading it) -> charts and tables for its structured details.
# Scalar entries are always shown by the generic table, so a builder handles only the rest.
EvidenceBuilder = Callable[[Run, Sequence[RequirementResult]], list[Block]]

EVIDENCE: dict[str, EvidenceBuilder] = {
    "evasion": evidence_security.evasion,
    "membership_inference": evidence_membership.run_evidence,
    "discrimination": evidence_fairness.discrimination,
    "poisoning": evidence_security.poisoning,
    "model_extraction": evidence_security.model_extraction,
    "attribute_inference": evidence_privacy.attribute_inference,
    "data_reconstruction": evidence_privacy.data_reconstruction,
    "distribution_inference": evidence_privacy.distribution_inference,
}


def _evidence(run: Run, reqs: Sequence[RequirementResult]) -> Evidence:
    """The evidence of one attack run, shared by the requirements in `reqs`."""
    details = run.details
    warnings = details.get("warnings")
    notes = [str(w) for w in warnings if w] if isinstance(warnings, list) else []
    blocks: list[Block] = []
    builder = EVIDENCE.get(reqs[0].risk)
    if builder:
        # Evidence that does not have the recorded shape must not stop the report from rendering.
        try:
            blocks += builder(run, reqs)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as exc:
            notes.append(f"The recorded evidence could not be charted ({type(exc).__name__}: {exc}).")
    scalars = scalar_table(details, "Recorded results of the attack run")
    if scalars:
        blocks.append(scalars)
    heading = f"{run.attack} attack" + (f" ({fmt_params(run.params)})" if run.params else "")
    return Evidence(heading, tuple(r.id for r in reqs), tuple(blocks), tuple(notes))


def _runs(reqs: Sequence[RequirementResult], runs: Mapping[str, Run]) -> list[tuple[Run, list[RequirementResult]]]:
    """The attack runs `reqs` point to, each with the requirements that read it, in order of first reference;
    runs that recorded no evidence are left out."""
    grouped: dict[str, list[RequirementResult]] = {}
    for r in reqs:
        if r.run in runs and runs[r.run].details:
            grouped.setdefault(r.run, []).append(r)
    return [(runs[run_id], group) for run_id, group in grouped.items()]


# Per risk: every run of a section -> one Evidence shown before the runs' own (e.g. all ROC curves on one chart).
SectionBuilder = Callable[[Sequence[tuple[Run, Sequence[RequirementResult]]]], Union[Evidence, None]]
SECTION_EVIDENCE: dict[str, SectionBuilder] = {
    "membership_inference": evidence_membership.combined_roc,
}


def _section_evidence(risk: str, runs: Sequence[tuple[Run, Sequence[RequirementResult]]]) -> tuple[Evidence, ...]:
    builder = SECTION_EVIDENCE.get(risk)
    try:
        combined = builder(runs) if builder and runs else None
    except (KeyError, TypeError, ValueError, AttributeError, IndexError):
        combined = None  # malformed evidence must not stop the report; each run still shows its own
    return (combined,) if combined else ()


def _section(risk: str, reqs: Sequence[RequirementResult], runs: Mapping[str, Run]) -> RiskSection:
    title, description = RISKS.get(risk, (label(risk), "Requirements measured for this risk by the attacks listed."))
    measured = _runs(reqs, runs)
    controls = controls_evidence(reqs)  # what the same attacks found on deliberately vulnerable controls
    return RiskSection(
        risk=risk,
        anchor=f"risk-{risk}",
        title=title,
        description=description,
        verdict=_section_verdict(reqs),
        rows=tuple(_row(r) for r in reqs),
        evidence=_section_evidence(risk, measured) + tuple(_evidence(run, group) for run, group in measured)
        + ((controls,) if controls else ()),
    )


# --- the other parts --------------------------------------------------------------------------


def _cover(result: AuditResult) -> Cover:
    reqs = result.requirements
    counts = {v.value: sum(r.verdict is v for r in reqs) for v in ORDER}
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
        *((Field("Model output", m.output_note or result.model_output),) if result.model_output else ()),
        *((Field("Trained copies", _fidelity_text(result)),) if result.copy_fidelity else ()),
        Field("Data", (f"{d.name} — " if d.name else "") + d.path, mono=not d.name),
        Field("Data records", f"{d.n_train:,} training, {d.n_holdout:,} held out"),
        Field("Policy", f"{p.title} ({p.id})"),
        Field("Regulation", str(p.regulation.get("name", "")) if p.regulation else DASH),
        Field("Regulation status", regulation_status(p.regulation, result.finished_at)),
        Field("Recertification", recertification_text(result)),
        Field("Audit profile", f"{result.profile}, seed {result.seed}, {percent(result.confidence)} confidence"),
        Field("Audit completed", result.finished_at),
        Field("Tool", f"{result.tool.name} {result.tool.version}"),
    )
    return Cover(
        title="Model audit report",
        policy_title=p.title,
        verdict=VERDICT_BADGES[result.verdict],
        verdict_text=text,
        date=date(result.finished_at),
        facts=facts,
    )


def _fidelity_text(result: AuditResult) -> str:
    """How closely a copy trained with the data spec's recipe reproduces the audited model (`copy_fidelity`)."""
    cf = result.copy_fidelity
    if cf.not_measured or cf.accuracy_gap is None:
        return cf.not_measured or DASH
    verdict = "Reproduce" if cf.faithful else "Do not reproduce"
    return (f"{verdict} the model: holdout accuracy {cf.copy_accuracy:.1%} against {cf.audited_accuracy:.1%} "
            f"({cf.accuracy_gap * 100:+.1f} points), same prediction on {cf.agreement:.1%} of {cf.n:,} records")


def _summary(result: AuditResult) -> Summary:
    ordered = sorted(result.requirements, key=_priority)
    counts = tuple(
        (VERDICT_BADGES[v.value], n)
        for v in ORDER
        if (n := sum(r.verdict is v for r in result.requirements))
    )
    return Summary(counts, tuple(_row(r) for r in ordered))


def _methods(result: AuditResult) -> Methods:
    intro = (
        f"Every value in this report was produced by the attack run and configuration listed below (run ids as in "
        f"results.json), with the “{result.profile}” attack profile and random seed {result.seed}. Intervals are "
        f"{percent(result.confidence)} confidence intervals, computed as each row states (exact binomial for "
        "rates, bootstrap otherwise); n is the number of records the value was measured on."
    )
    rules = (
        (VERDICT_BADGES["pass"], "the whole confidence interval lies on the required side of the threshold."),
        (VERDICT_BADGES["fail"], "the measured value lies on the wrong side of the threshold."),
        (VERDICT_BADGES["indeterminate"], "the interval straddles the threshold, or the sample is too small "
                                          "for the metric."),
        (VERDICT_BADGES["not_applicable"], "the requirement cannot be measured for this model or data; the "
                                           "reason is stated."),
    )
    runs = result.runs_by_id()
    table = Table(
        ("Requirement", "Risk", "Run", "Attack", "Metric", "Parameters", "Interval", "n"),
        tuple(
            (r.id, risk_title(r.risk), r.run, r.attack, r.metric,
             fmt_params(runs[r.run].params) if r.run in runs else DASH, r.ci_method or DASH,
             fmt_number(r.n) if r.n else DASH)
            for r in result.requirements
        ),
        "Attack run, configuration and interval method per requirement",
        numeric=frozenset({7}),
        mono=frozenset({0, 2, 3, 4, 5}),
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
            Field("Results schema", result.schema_version
                  + (f" (read from a {result.converted_from} file)" if result.converted_from else "")),
            Field("Seed", str(result.seed)),
            Field("Profile", result.profile),
            Field("Confidence level", percent(result.confidence)),
            Field("Started", result.started_at),
            Field("Finished", result.finished_at),
            Field("Duration", duration(result.started_at, result.finished_at)),
        )),
    )
    tables: list[Table] = []
    if d.files:
        tables.append(Table(("Data file", "SHA-256"), tuple(d.files.items()), "Data files read",
                            mono=frozenset({0, 1})))
    env = scalar_table(result.environment, "Environment")
    if env:
        tables.append(Table(("Component", "Version"), env.rows, env.caption))
    for key, value in result.environment.items():
        if isinstance(value, Mapping) and value:
            tables.append(Table(("Name", "Value"), tuple((str(k), compact(v)) for k, v in value.items()),
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
    runs = result.runs_by_id()
    sections = tuple(_section(risk, reqs, runs) for risk, reqs in by_risk.items())
    interactions = interactions_chapter(result)
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
        warnings=tuple(result.model.warnings) + tuple(result.report_warnings)
        + ((result.copy_fidelity.warning,) if result.copy_fidelity and result.copy_fidelity.warning else ()),
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
