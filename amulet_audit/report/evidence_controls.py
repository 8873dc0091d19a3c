"""Report evidence for the positive controls of privacy and poisoning requirements: what the same attack, with the
same parameters and budget, found on a deliberately vulnerable control (results `RequirementResult.control`,
computed by run/controls.py). A requirement whose attack did not detect its control cannot PASS; the table says
what the control was and what was measured there, as recorded, never recomputed."""

from __future__ import annotations

from collections.abc import Sequence

from amulet_audit.report.format import DASH, fmt_params, fmt_seconds, fmt_threshold, fmt_value_ci, metric_name
from amulet_audit.report.nodes import Evidence, Table
from amulet_audit.results.model import RequirementResult

HEADING = "positive controls (each attack where the risk is known to be present)"


def _detected(control) -> str:
    if control.detected is None:
        return "no control"
    return "yes" if control.detected else "no: the attack had no power at this budget"


def controls_evidence(reqs: Sequence[RequirementResult]) -> Evidence | None:
    """One Evidence with a row per requirement of `reqs` that records a control: the control, the attack's
    configuration on it, the requirement's metric measured there with its interval, the threshold, whether the
    control breached it (detected), and its duration; None when no requirement records one."""
    rows = []
    for r in reqs:
        c = r.control
        if c is None:
            continue
        what = c.not_available or c.description or DASH
        measured = DASH if c.value is None else f"{metric_name(c.metric or r.metric)} {fmt_value_ci(c.value, c.ci)}"
        rows.append((r.id, what, fmt_params(c.params) if c.params and not c.not_available else DASH, measured,
                     fmt_threshold(c.threshold or r.threshold), _detected(c), fmt_seconds(c.seconds)))
    if not rows:
        return None
    table = Table(("Requirement", "Control", "Attack parameters", "Measured on the control", "Threshold", "Detected",
                   "Time"), tuple(rows),
                  "Each attack run again, with the same budget, where the risk is known to be present. A PASS stands "
                  "only where the attack detected its control (its value there breaches the threshold); the same "
                  "control holds for the defended models.",
                  numeric=frozenset({6}), mono=frozenset({0, 2}))
    return Evidence(HEADING, tuple(r.id for r in reqs if r.control is not None), (table,), ())
