"""Report evidence for membership inference: every attack run's ROC on one log-log chart (once per section),
and per run the reference-model setup and the records the attack found most exposed.

Builders read the recorded `details` only (roc, auc, n_members, n_nonmembers, reference_models, online,
most_exposed); nothing is recomputed. Records are identified by split and row index, never by feature values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from amulet_audit.report import charts
from amulet_audit.report.format import DASH, fmt_number, fmt_params
from amulet_audit.report.nodes import Block, Chart, Evidence, Table
from amulet_audit.results.model import RequirementResult, Run


def _run_label(run: Run) -> str:
    details = run.details
    parts = []
    if details.get("reference_models") is not None:
        parts.append(f"{details['reference_models']} ref.")
    if isinstance(details.get("online"), bool):
        parts.append("online" if details["online"] else "offline")
    label = run.attack + (f" ({', '.join(parts)})" if parts else "")
    auc = details.get("auc")
    return label + (f", AUC {fmt_number(auc)}" if charts._is_number(auc) else "")


def combined_roc(runs: Sequence[tuple[Run, Sequence[RequirementResult]]]) -> Evidence | None:
    """One Evidence for a membership section: the ROC of every attack run (with the requirements that read it) on
    one chart, and a comparison table. None when no run recorded a ROC."""
    charted = [(run, reqs) for run, reqs in runs
               if isinstance(run.details.get("roc"), Mapping) and run.details["roc"].get("fpr")]
    if not charted:
        return None
    curves = [{"label": _run_label(run), "fpr": run.details["roc"]["fpr"], "tpr": run.details["roc"]["tpr"]}
              for run, _ in charted]
    members = [run.details.get("n_members") for run, _ in charted if isinstance(run.details.get("n_members"), int)]
    nonmembers = [run.details.get("n_nonmembers") for run, _ in charted
                  if isinstance(run.details.get("n_nonmembers"), int)]
    svg = charts.roc_loglog(curves, n_members=max(members, default=None), n_nonmembers=max(nonmembers, default=None))
    caption = (
        "Every membership attack of this audit on the same logarithmic axes, starting at the smallest rate the "
        "sample resolves. A curve above the diagonal tells members from non-members better than chance; the left "
        "part (few false positives) is where an attack identifies individuals with confidence."
    )
    rows = []
    for run, reqs in charted:
        d = run.details
        rows.append((
            run.attack,
            fmt_params(run.params),
            fmt_number(d.get("reference_models")) if d.get("reference_models") is not None else DASH,
            ("online" if d["online"] else "offline") if isinstance(d.get("online"), bool) else DASH,
            fmt_number(d.get("auc")),
            _metric_of(reqs, "tpr_at_fpr_0.01"),
            _metric_of(reqs, "tpr_at_fpr_0.001"),
        ))
    table = Table(
        ("Attack", "Parameters", "Reference models", "Mode", "AUC", "TPR at 1 % FPR", "TPR at 0.1 % FPR"),
        tuple(rows), "Membership attacks compared (values as measured; intervals in the requirement rows)",
        numeric=frozenset({2, 4, 5, 6}), mono=frozenset({0, 1}),
    )
    ids = tuple(dict.fromkeys(r.id for _, reqs in charted for r in reqs))
    blocks = (Chart("Membership-inference ROC of every attack (log-log)", svg, caption), table)
    return Evidence("all membership attacks compared", ids, blocks, ())


def _metric_of(reqs: Sequence[RequirementResult], metric: str) -> str:
    for r in reqs:
        if r.metric == metric:
            return fmt_number(r.value)
    return DASH


def run_evidence(run: Run, reqs: Sequence[RequirementResult]) -> list[Block]:
    """Per membership run: the records most exposed (split, row index, score). The ROC is on the section's
    combined chart; the reference-model setup (count, online/offline, trainer) is among the run's scalars."""
    exposed = run.details.get("most_exposed") or []
    if not exposed:
        return []
    rows = tuple(
        (str(i + 1), "training (member)" if e["split"] == "train" else "holdout (non-member)",
         fmt_number(int(e["row"])), fmt_number(float(e["score"])))
        for i, e in enumerate(exposed)
    )
    return [Table(
        ("Rank", "Split", "Row", "Attack score"), rows,
        "Records the attack found most likely to be training members (row index in the data split; no feature "
        "values are shown). Holdout rows here are false alarms.",
        numeric=frozenset({0, 2, 3}),
    )]
