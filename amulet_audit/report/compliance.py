"""Regulator-facing parts of the report: traceability (provision -> requirements -> verdicts), the dated test
log with artefact digests (EU AI Act Annex IV 2(g)), the recertification comparison and the regulation's status.

Like document.py, everything here is read from the AuditResult as recorded; nothing is re-measured.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import date as _date_type, datetime
from typing import Any

from amulet_audit.report.format import (
    DASH, VERDICT_BADGES, date, fmt_params, fmt_seconds, fmt_threshold, fmt_value_ci,
)
from amulet_audit.report.nodes import Badge, Field, FieldGroup, RecertificationView, Table, TestLog, Traceability
from amulet_audit.results.diff import valid_until
from amulet_audit.results.model import AuditResult, Recertification, RequirementResult


_BASIS = {"legal_rule": "legal rule", "benchmark": "benchmark"}


def results_sha256(result: AuditResult) -> str:
    """SHA-256 of results.json as `write_results` writes this result (the file the report was rendered from)."""
    return hashlib.sha256((result.model_dump_json(indent=2) + "\n").encode("utf-8")).hexdigest()


# --- regulation status -------------------------------------------------------------------------

_STATUS = {
    "in-force": "in force",
    "adopted": "adopted, not yet applicable",
    "proposed": "proposed, not law",
    "guidance": "guidance (voluntary)",
    "standard": "published standard (voluntary unless contracted or certified)",
    "repealed": "repealed",
}


def regulation_status(regulation: Mapping[str, Any], as_of: str) -> str:
    """'in force since 2 August 2026', 'adopted; applies from …', or '—' (dates as recorded in the policy)."""
    if not regulation:
        return DASH
    status = str(regulation.get("status", "") or "")
    effective = regulation.get("effective")
    text = _STATUS.get(status, status or "status not stated")
    if effective:
        when = date(str(effective))
        try:
            pending = _date_type.fromisoformat(str(effective)) > datetime.fromisoformat(as_of).date()
        except (TypeError, ValueError):
            pending = False
        if pending:
            text += f"; applies from {when} (after this audit)"
        elif status in ("in-force", "adopted"):
            text = f"in force since {when}"
        else:
            text += f"; effective {when}"
    return text


def recertification_text(result: AuditResult) -> str:
    """'every 365 days; recertify by 22 November 2027', or that the policy sets no period."""
    period = result.policy.recertification_days
    if not period:
        return "the policy sets no recertification period"
    until = valid_until(result)
    return f"every {period} days; this audit must be repeated by {date(until)}" if until else f"every {period} days"


# --- traceability ------------------------------------------------------------------------------


def traceability(result: AuditResult) -> Traceability:
    """One block of rows per cited provision (in order of first citation): the requirements citing it,
    their thresholds and who set them (legal rule or benchmark), values and verdicts."""
    provisions: dict[str, list[RequirementResult]] = {}
    uncited = []
    for r in result.requirements:
        for c in r.cite:
            provisions.setdefault(c, []).append(r)
        if not r.cite:
            uncited.append(r)
    if uncited:
        provisions["(no provision cited)"] = uncited
    rows = []
    for provision, reqs in provisions.items():
        for i, r in enumerate(reqs):
            basis = _BASIS.get(r.basis, r.basis) if r.basis else DASH
            rows.append((
                provision if i == 0 else "",
                f"{r.title or r.id} ({r.id})",
                f"{r.metric} {fmt_threshold(r.threshold)}",
                basis,
                fmt_value_ci(r.value, r.ci),
                VERDICT_BADGES[r.verdict.value],
            ))
    table = Table(
        ("Provision", "Requirement", "Metric and threshold", "Threshold set by", "Value [CI]", "Verdict"),
        tuple(rows),
        "Each provision the policy cites, the requirements that evidence it, and their verdicts",
        numeric=frozenset({4}),
        mono=frozenset(),
    )
    intro = (
        "Which measurements support which legal provision. A threshold marked “benchmark” is a recommended "
        "value, not a number the regulation sets; “legal rule” marks a number the regulation itself sets. "
        "A provision is evidenced only as far as all of its requirements pass."
    )
    return Traceability(intro, table)


# --- test log (Annex IV 2(g)) ------------------------------------------------------------------


def test_log(result: AuditResult) -> TestLog:
    """The dated log of this audit's test runs, with the digests that identify model, data, policy and results."""
    results_digest = results_sha256(result)
    groups = (
        FieldGroup("Identification", (
            Field("Test log", f"amulet-audit run {results_digest[:16]}", mono=True),
            Field("Started (UTC)", result.started_at),
            Field("Finished (UTC)", result.finished_at),
            Field("Tool", f"{result.tool.name} {result.tool.version}"),
            Field("Profile and seed", f"{result.profile}, seed {result.seed}"),
        )),
        FieldGroup("Digests (SHA-256)", (
            Field("Model", result.model.sha256, mono=True),
            Field("Data (specification and files)", result.data.sha256, mono=True),
            Field("Policy", result.policy.sha256, mono=True),
            Field("Results (results.json)", results_digest, mono=True),
        )),
    )
    rows = []
    for run in result.runs:
        if run.defense is not None:
            continue
        reqs = [r for r in result.requirements if r.run == run.id]
        rows.append((
            run.id,
            run.attack,
            fmt_params(run.params),
            ", ".join(f"{r.id}: {r.verdict.value.replace('_', ' ')}" for r in reqs) or DASH,
            fmt_seconds(run.seconds) if run.seconds else DASH,
        ))
    table = Table(
        ("Run", "Attack", "Configuration", "Requirements and verdicts", "Duration"),
        tuple(rows),
        "Test runs on the audited model, in the order run (run ids as in results.json)",
        numeric=frozenset({4}),
        mono=frozenset({0, 1, 2}),
    )
    intro = (
        "EU AI Act Annex IV 2(g) asks for dated and signed test logs. This log identifies the audited artefacts "
        "by their SHA-256 digests and lists every test run with its configuration; the sign-off at the end of "
        "this report carries the signatures. `amulet-audit verify` checks that the report folder's files are "
        "the ones written by this run; report.pdf embeds results.json as a file attachment."
    )
    return TestLog(intro, groups, table)


# --- recertification ---------------------------------------------------------------------------


def recertification(result: AuditResult) -> RecertificationView | None:
    """The comparison with the previous audit (`--baseline`), or None when there is none."""
    rec: Recertification | None = result.recertification
    if rec is None:
        return None
    n_reg = sum(c.regression for c in rec.requirements)
    verdict = Badge("fail", f"{n_reg} REGRESSION{'S' if n_reg != 1 else ''}", "✗") if n_reg else Badge("pass", "NO REGRESSION", "✓")
    if rec.period_days is None:
        period = "the policy sets no recertification period"
    elif rec.lapsed:
        period = f"{rec.period_days} days: exceeded, the previous audit had expired"
    else:
        period = f"{rec.period_days} days: within the period"
    facts = (
        Field("Previous audit", f"{rec.baseline_finished_at} — verdict {rec.baseline_verdict.upper()}"
              + (f" ({rec.baseline_tool_version})" if rec.baseline_tool_version else "")),
        Field("Previous results", rec.baseline_path or DASH, mono=True),
        Field("This audit", f"{rec.finished_at} — verdict {result.verdict.upper()}"),
        Field("Interval", f"{rec.interval_days:.1f} days"),
        Field("Recertification period", period),
        Field("This audit valid until", date(rec.valid_until) if rec.valid_until else DASH),
    )
    artefacts = Table(
        ("Artefact", "Previous SHA-256", "This SHA-256", "Status"),
        tuple(
            (a.artefact, a.old_sha256, a.new_sha256,
             Badge("indeterminate", "CHANGED", "!") if a.changed else Badge("pass", "UNCHANGED", "="))
            for a in rec.artefacts
        ),
        "Audited artefacts compared",
        mono=frozenset({1, 2}),
    )
    kinds = {
        "worsened": Badge("fail", "WORSENED", "↓"), "improved": Badge("pass", "IMPROVED", "↑"),
        "unchanged": Badge("not_applicable", "UNCHANGED", "="), "added": Badge("not_applicable", "ADDED", "+"),
        "removed": Badge("indeterminate", "REMOVED", "−"),
    }
    changes = Table(
        ("Requirement", "Previous value [CI]", "Previous verdict", "This value [CI]", "This verdict", "Change", "Why"),
        tuple(
            (c.id, fmt_value_ci(c.old_value, c.old_ci),
             VERDICT_BADGES[c.old_verdict.value] if c.old_verdict else DASH,
             fmt_value_ci(c.new_value, c.new_ci),
             VERDICT_BADGES[c.new_verdict.value] if c.new_verdict else DASH,
             kinds[c.change], c.reason or DASH)
            for c in rec.requirements
        ),
        "Requirements compared (a regression: the verdict worsened, or the value worsened beyond both intervals)",
        numeric=frozenset({1, 3}),
        mono=frozenset({0}),
    )
    notes = tuple(a.note for a in rec.artefacts if a.changed and a.note) + tuple(rec.notes)
    intro = (
        "This audit repeats a previous one. A requirement regresses when its verdict worsens, or when its value "
        "moves the wrong way by more than both confidence intervals. A changed model may be a substantial "
        "modification (EU AI Act Art. 43(4)) that needs a new conformity or impact assessment."
    )
    return RecertificationView(intro, verdict, facts, artefacts, changes, notes)


__all__ = ["recertification", "recertification_text", "regulation_status", "results_sha256", "test_log", "traceability"]

