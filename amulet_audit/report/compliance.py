"""Regulator-facing parts of the report: traceability (provision -> requirements -> verdicts), the dated test
log with artefact digests (EU AI Act Annex IV 2(g)), the recertification comparison, the regulation's status,
and the bias-audit table in the form 6 RCNY § 5-301 (NYC Local Law 144) describes.

Like document.py, everything here is read from the AuditResult as recorded; nothing is re-measured.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from amulet_audit.results.model import AuditResult, Recertification, RequirementResult

# `document` imports this module; these helpers are imported lazily from it inside functions to avoid a cycle.


@dataclass(frozen=True)
class Traceability:
    intro: str
    table: Any  # document.Table


@dataclass(frozen=True)
class TestLog:
    intro: str
    groups: tuple  # document.FieldGroup
    table: Any  # document.Table


@dataclass(frozen=True)
class RecertificationView:
    intro: str
    verdict: Any  # document.Badge: regression or not
    facts: tuple  # document.Field
    artefacts: Any  # document.Table
    changes: Any  # document.Table
    notes: tuple[str, ...]


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
    from amulet_audit.report.document import DASH, _date

    if not regulation:
        return DASH
    status = str(regulation.get("status", "") or "")
    effective = regulation.get("effective")
    text = _STATUS.get(status, status or "status not stated")
    if effective:
        when = _date(str(effective))
        try:
            pending = date.fromisoformat(str(effective)) > datetime.fromisoformat(as_of).date()
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
    from amulet_audit.report.document import _date
    from amulet_audit.results.diff import valid_until

    period = result.policy.recertification_days
    if not period:
        return "the policy sets no recertification period"
    until = valid_until(result)
    return f"every {period} days; this audit must be repeated by {_date(until)}" if until else f"every {period} days"


# --- traceability ------------------------------------------------------------------------------


def traceability(result: AuditResult) -> Traceability:
    """One block of rows per cited provision (in order of first citation): the requirements citing it,
    their thresholds and who set them (legal rule or benchmark), values and verdicts."""
    from amulet_audit.report.document import DASH, VERDICT_BADGES, Table, fmt_threshold, fmt_value_ci

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
    from amulet_audit.report.document import DASH, Field, FieldGroup, Table, fmt_params, fmt_seconds

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
    runs: dict[str, list[RequirementResult]] = {}
    for r in result.requirements:
        key = f"{r.attack}:{json.dumps(r.params, sort_keys=True, default=str)}"
        runs.setdefault(key, []).append(r)
    timings = _attack_timings(result.timings)
    rows = []
    for i, (key, reqs) in enumerate(runs.items(), 1):
        first = reqs[0]
        seconds = timings.get(first.attack, {}).get(_params_key(first.params))
        rows.append((
            str(i),
            first.attack,
            fmt_params(first.params),
            ", ".join(f"{r.id}: {r.verdict.value.replace('_', ' ')}" for r in reqs),
            fmt_seconds(seconds) if seconds is not None else DASH,
        ))
    table = Table(
        ("#", "Attack", "Configuration", "Requirements and verdicts", "Duration"),
        tuple(rows),
        "Test runs of this audit, in the order run",
        numeric=frozenset({0, 4}),
        mono=frozenset({1, 2}),
    )
    intro = (
        "EU AI Act Annex IV 2(g) asks for dated and signed test logs. This log identifies the audited artefacts "
        "by their SHA-256 digests and lists every test run with its configuration; the sign-off at the end of "
        "this report carries the signatures. `amulet-audit verify` checks that the report folder's files are "
        "the ones written by this run; report.pdf embeds results.json as a file attachment."
    )
    return TestLog(intro, groups, table)


def _params_key(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)


def _attack_timings(timings: Mapping[str, float]) -> dict[str, dict[str, float]]:
    """timings["attack:<name>:<params json>"] -> {name: {params json (normalised): seconds}}."""
    out: dict[str, dict[str, float]] = {}
    for key, seconds in timings.items():
        if not key.startswith("attack:"):
            continue
        name, _, params = key[len("attack:"):].partition(":")
        try:
            normalised = _params_key(json.loads(params))
        except ValueError:
            normalised = params
        out.setdefault(name, {})[normalised] = seconds
    return out


# --- recertification ---------------------------------------------------------------------------


def recertification(result: AuditResult) -> RecertificationView | None:
    """The comparison with the previous audit (`--baseline`), or None when there is none."""
    from amulet_audit.report.document import DASH, Badge, Field, Table, VERDICT_BADGES, _date, fmt_value_ci

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
        Field("This audit valid until", _date(rec.valid_until) if rec.valid_until else DASH),
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


# --- NYC LL144 bias-audit table (6 RCNY § 5-301) ----------------------------------------------


def bias_audit_blocks(details: Mapping[str, Any]) -> list:
    """Selection rates and impact ratios per category, sex, race/ethnicity and intersections as separate
    parts, in the form 6 RCNY § 5-301 describes; groups not compared are marked with the reason.
    Empty when the details do not record per-group impact ratios (results of older versions)."""
    from amulet_audit.report.document import DASH, Table, fmt_number, label

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


__all__ = [
    "RecertificationView", "TestLog", "Traceability", "bias_audit_blocks", "recertification",
    "recertification_text", "regulation_status", "results_sha256", "test_log", "traceability",
]

