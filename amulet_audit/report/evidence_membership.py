"""Report evidence for membership inference: every attack run's ROC on one log-log chart (once per section),
and per run the reference-model setup and the records the attack found most exposed.

Builders read the recorded `details` only (roc, auc, n_members, n_nonmembers, reference_models, online,
most_exposed); nothing is recomputed. Records are identified by split and row index, never by feature values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any


from amulet_audit.report import charts

if TYPE_CHECKING:
    from amulet_audit.report import document as doc
    from amulet_audit.results.model import RequirementResult


def _run_label(run: Sequence[RequirementResult]) -> str:
    from amulet_audit.report import document as doc

    first = run[0]
    details = first.details
    parts = []
    if details.get("reference_models") is not None:
        parts.append(f"{details['reference_models']} ref.")
    if isinstance(details.get("online"), bool):
        parts.append("online" if details["online"] else "offline")
    label = first.attack + (f" ({', '.join(parts)})" if parts else "")
    auc = details.get("auc")
    return label + (f", AUC {doc.fmt_number(auc)}" if charts._is_number(auc) else "")


def combined_roc(runs: Sequence[Sequence[RequirementResult]]) -> doc.Evidence | None:
    """One Evidence for a membership section: the ROC of every attack run on one chart, and a comparison table.
    None when no run recorded a ROC."""
    from amulet_audit.report import document as doc

    charted = [run for run in runs if isinstance(run[0].details.get("roc"), Mapping) and run[0].details["roc"].get("fpr")]
    if not charted:
        return None
    curves = [{"label": _run_label(run), "fpr": run[0].details["roc"]["fpr"], "tpr": run[0].details["roc"]["tpr"]}
              for run in charted]
    members = [r[0].details.get("n_members") for r in charted if isinstance(r[0].details.get("n_members"), int)]
    nonmembers = [r[0].details.get("n_nonmembers") for r in charted if isinstance(r[0].details.get("n_nonmembers"), int)]
    svg = charts.roc_loglog(curves, n_members=max(members, default=None), n_nonmembers=max(nonmembers, default=None))
    caption = (
        "Every membership attack of this audit on the same logarithmic axes, starting at the smallest rate the "
        "sample resolves. A curve above the diagonal tells members from non-members better than chance; the left "
        "part (few false positives) is where an attack identifies individuals with confidence."
    )
    rows = []
    for run in charted:
        d = run[0].details
        rows.append((
            run[0].attack,
            doc.fmt_params(run[0].params),
            doc.fmt_number(d.get("reference_models")) if d.get("reference_models") is not None else doc.DASH,
            ("online" if d["online"] else "offline") if isinstance(d.get("online"), bool) else doc.DASH,
            doc.fmt_number(d.get("auc")),
            _metric_of(run, "tpr_at_fpr_0.01"),
            _metric_of(run, "tpr_at_fpr_0.001"),
        ))
    table = doc.Table(
        ("Attack", "Parameters", "Reference models", "Mode", "AUC", "TPR at 1 % FPR", "TPR at 0.1 % FPR"),
        tuple(rows), "Membership attacks compared (values as measured; intervals in the requirement rows)",
        numeric=frozenset({2, 4, 5, 6}), mono=frozenset({0, 1}),
    )
    ids = tuple(dict.fromkeys(r.id for run in charted for r in run))
    blocks = (doc.Chart("Membership-inference ROC of every attack (log-log)", svg, caption), table)
    return doc.Evidence("all membership attacks compared", ids, blocks, ())


def _metric_of(run: Sequence[RequirementResult], metric: str) -> str:
    from amulet_audit.report import document as doc

    for r in run:
        if r.metric == metric:
            return doc.fmt_number(r.value)
    return doc.DASH


def run_evidence(details: Mapping[str, Any], reqs: Sequence[RequirementResult]) -> list[doc.Block]:
    """Per membership run: the records most exposed (split, row index, score). The ROC is on the section's
    combined chart; the reference-model setup (count, online/offline, trainer) is among the run's scalars."""
    from amulet_audit.report import document as doc

    exposed = details.get("most_exposed") or []
    if not exposed:
        return []
    rows = tuple(
        (str(i + 1), "training (member)" if e["split"] == "train" else "holdout (non-member)",
         doc.fmt_number(int(e["row"])), doc.fmt_number(float(e["score"])))
        for i, e in enumerate(exposed)
    )
    return [doc.Table(
        ("Rank", "Split", "Row", "Attack score"), rows,
        "Records the attack found most likely to be training members (row index in the data split; no feature "
        "values are shown). Holdout rows here are false alarms.",
        numeric=frozenset({0, 2, 3}),
    )]
