"""Formatting for the report: how values, intervals, thresholds, durations and names read, and the vocabulary
(risk, metric and verdict names) they are read in. Imports only the node types (report/nodes.py)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from amulet_audit.core.verdict import Verdict
from amulet_audit.report.nodes import Badge, Table
from amulet_audit.results.model import Threshold


# --- vocabulary -------------------------------------------------------------------------------

VERDICT_BADGES: dict[str, Badge] = {
    Verdict.PASS.value: Badge("pass", "PASS", "✓"),
    Verdict.FAIL.value: Badge("fail", "FAIL", "✗"),
    Verdict.INDETERMINATE.value: Badge("indeterminate", "INDETERMINATE", "?"),
    Verdict.NOT_APPLICABLE.value: Badge("not_applicable", "NOT APPLICABLE", "–"),
}

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
    return ", ".join(f"{k}={compact(v)}" for k, v in params.items()) or DASH


def label(key: str) -> str:
    """A readable label for a details or environment key."""
    if key in _LABELS:
        return _LABELS[key]
    text = key.replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def compact(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)
    return str(value)


def date(iso: str) -> str:
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    return f"{moment.day} {moment:%B %Y}"


def duration(started: str, finished: str) -> str:
    try:
        return fmt_seconds((datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds())
    except (TypeError, ValueError):
        return DASH


def is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def scalar_table(entries: Mapping[str, Any], caption: str) -> Table | None:
    """A key/value table of the scalar entries of `entries` (nested values are left to other tables)."""
    rows = tuple((label(k), fmt_number(v)) for k, v in entries.items() if is_scalar(v))
    return Table(("Quantity", "Value"), rows, caption, numeric=frozenset({1})) if rows else None


def risk_title(risk: str) -> str:
    """A risk's heading, e.g. "Evasion (adversarial examples)"; unknown risks get a label from their name."""
    return RISKS[risk][0] if risk in RISKS else label(risk)


def metric_name(metric: str) -> str:
    """A metric's readable name, e.g. "TPR at 1 % FPR"."""
    return METRICS.get(metric, label(metric))


def metric_in_sentence(metric: str) -> str:
    """A metric's name inside a sentence: "Robust accuracy" -> "robust accuracy", "ROC AUC" stays."""
    text = metric_name(metric)
    return text if text[:2].isupper() else text[:1].lower() + text[1:]


def percent(confidence: float) -> str:
    return f"{confidence * 100:g} %"
