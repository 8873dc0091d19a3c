"""The AuditResult schema: the shape of results.json (DESIGN.md, "results.json").

Reports, `render` and `diff` read only this. Bump SCHEMA_VERSION on any incompatible change; `results.io` converts
older files on read.

Schema 2.0: every attack run is recorded once, in `runs` (its configuration, provider, duration and evidence), and
the requirements it measured point to it by `run` id; a defense's measurements point to the runs on the defended
model. Each requirement records its metric's direction and unit (`metric_info`) and how its interval was computed
(`ci_method`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from amulet_audit.core.verdict import Verdict

SCHEMA_VERSION = "2.0"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ToolInfo(_Strict):
    name: str = "amulet-audit"
    version: str


class ModelInfo(_Strict):
    path: str
    sha256: str
    format: Literal["torchscript", "export", "state_dict", "pickle", "onnx", "endpoint", "skops"]
    parameters: int
    architecture: str = ""
    warnings: list[str] = Field(default_factory=list)
    output_note: str = Field("", description="How the output convention (`model_output`) was established: detected "
                                             "from the outputs on probe records, or given by the data spec.")


class DataInfo(_Strict):
    path: str
    sha256: str
    name: str = ""
    files: dict[str, str] = Field(default_factory=dict)  # data file path -> sha256
    n_train: int
    n_holdout: int
    n_features: int = 0
    classes: list[str] = Field(default_factory=list)
    positive_label: str | None = None
    sensitive: list[str] = Field(default_factory=list)


class PolicyInfo(_Strict):
    id: str
    sha256: str
    title: str
    path: str = ""
    regulation: dict[str, Any] = Field(default_factory=dict)
    recertification_days: int | None = None  # the policy's recertification period (days), if it sets one


class Threshold(_Strict):
    op: Literal[">=", "<="]
    value: float


class MetricInfo(_Strict):
    """What a metric's numbers mean (from the metric's registration)."""

    higher_is_worse: bool = Field(description="True when a larger value means more risk (e.g. membership AUC); "
                                              "False when larger is better (e.g. robust accuracy).")
    unit: str = Field("", description="The unit of the value and its interval: 'fraction' (a share of records, "
                                      "0..1), 'difference' (of two quantities in 0..1, so -1..1), 'ratio' (of two "
                                      "fractions), 'auc' (0.5 is chance); empty when the metric does not declare one, "
                                      "or in results converted from schema 1.x.")


class Run(_Strict):
    """One attack run on the audited model or on a defended copy: recorded once, read by every requirement (and
    interaction) that uses its output."""

    id: str = Field(description="Unique within the file; requirements point to it (e.g. 'r3'; a run on a defended "
                                "model: '<defense>/r3').")
    attack: str = Field(description="The attack's registry name.")
    params: dict[str, Any] = Field(default_factory=dict, description="The attack configuration (defaults filled in).")
    provider: str = Field("", description="The distribution (name and version) that provided the attack.")
    seconds: float = Field(0.0, description="Wall time of the run (s).")
    defense: str | None = Field(None, description="The defense whose model was attacked; null: the audited model.")
    not_applicable: str = Field("", description="Why the attack could not run on these inputs (nothing measured).")
    details: dict[str, Any] = Field(default_factory=dict, description="Attack-specific evidence for charts and tables.")


class PositiveControl(_Strict):
    """A positive control of a requirement's attack (run/controls.py): the same attack with the same parameters and
    budget on a deliberately vulnerable setting (e.g. a copy of the architecture overfit on a small subset of the
    training records), computed once per attack job and read by the requirement's rows on the audited model and on
    every defended model. A PASS whose attack did not detect its control is INDETERMINATE: the attack had no power."""

    attack: str = Field(description="The attack's registry name.")
    params: dict[str, Any] = Field(default_factory=dict, description="The attack configuration run on the control "
                                                                     "(the requirement's, defaults filled in; for "
                                                                     "poisoning and property inference the stronger "
                                                                     "poison or property).")
    description: str = Field("", description="What the control was, in one sentence.")
    metric: str = ""
    value: float | None = Field(None, description="The requirement's metric measured on the control.")
    ci: list[float] | None = None
    n: int = 0
    threshold: Threshold | None = None
    detected: bool | None = Field(None, description="Whether the control's value breaches the requirement's threshold "
                                                    "(its point estimate would FAIL); null when there is no control.")
    not_available: str = Field("", description="Why there is no positive control (e.g. no trainable copies), in "
                                               "one sentence; the verdict is then left as measured.")
    seconds: float = Field(0.0, description="Wall time of the control (training it and running the attack on it), "
                                            "shared by the requirements of one attack job.")
    details: dict[str, Any] = Field(default_factory=dict, description="Scalar evidence of the control run.")


class RequirementResult(_Strict):
    """One requirement judged against its threshold, on the audited model or (under `defenses`) a defended one."""

    id: str
    title: str = ""
    risk: str
    attack: str
    metric: str
    value: float | None
    ci: list[float] | None = Field(description="[low, high] at the audit's `confidence`; null when not measured.")
    ci_method: str = Field("", description="How the interval was computed (e.g. 'exact binomial (Clopper-Pearson)', "
                                           "'percentile bootstrap'); empty when nothing was measured, or in results "
                                           "converted from schema 1.x.")
    n: int = Field(description="Records (or, where the metric says so, groups) the value was measured on.")
    threshold: Threshold
    verdict: Verdict
    reason: str = ""  # why indeterminate / not applicable
    cite: list[str] = Field(default_factory=list)
    severity: str = "medium"
    basis: str = ""  # "legal_rule" or "benchmark": who set the threshold (from the policy)
    rationale: str = ""
    run: str = Field(description="The id of the run (in `runs`) that measured the value and holds its evidence.")
    metric_info: MetricInfo
    warnings: list[str] = Field(default_factory=list, description="Notes on this requirement's value.")
    control: PositiveControl | None = Field(None, description="The same attack, parameters and budget run on a "
                                                              "deliberately vulnerable control (privacy and poisoning "
                                                              "risks); null for other risks and in older results.")


class Interaction(_Strict):
    """One (defense, requirement) cell of the interaction matrix: the requirement's metric on the audited model
    (`baseline`) and on the defended model (`defended`), measured with the same attack, seed and budget."""

    defense: str
    risk: str
    requirement: str = ""
    metric: str
    baseline: float
    defended: float
    delta: float  # defended - baseline
    delta_ci: list[float] | None = None  # interval of the delta (see run/interactions.py)
    delta_ci_method: Literal["paired bootstrap", "normal approximation"] | None = None
    worse: bool  # the risk grew (direction-aware)
    intended: bool  # the defense is meant for this risk
    flagged: bool  # unintended, worse by more than the tolerance, interval excludes zero, survives BH (fdr)
    possible: bool = False  # unintended, worse by more than the tolerance, but not flagged (interval or BH)
    p_value: float | None = None  # one-sided, that the change is for the worse (bootstrap or normal)
    p_adjusted: float | None = None  # Benjamini-Hochberg over the audit's unintended rows; None: not tested
    fdr: float | None = None  # the false discovery rate the flags were controlled at
    baseline_verdict: str = ""
    defended_verdict: str = ""
    tolerance: float = 0.0
    # what the defended model is compared with: "" the audited model; a defense's name: that defense applied alone
    # (a combination compared with each of its parts, `AuditResult.combined`; `baseline` is then the part's value)
    versus: str = ""


class DefenseResult(_Strict):
    """A defense applied to a copy of the audited model, and everything measured on the defended model."""

    name: str
    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict)
    intended: list[str] = Field(default_factory=list)
    model_sha256: str = ""  # of the defended weights
    clean_accuracy_before: float | None = None  # utility cost: holdout accuracy of the audited model
    clean_accuracy_after: float | None = None  # and of the defended one
    details: dict[str, Any] = Field(default_factory=dict)
    requirements: list[RequirementResult] = Field(default_factory=list)  # measured on the defended model
    provider: str = ""
    training_seconds: float = 0.0  # applying the defense (training the defended copy)
    seconds: float = 0.0  # applying the defense and measuring every requirement on the defended model
    not_applicable: str = ""  # why the defense could not be applied to these inputs (then nothing was measured)
    parts: list[str] = Field(default_factory=list)  # a combination: the defenses trained together (params by name)
    # what to read with care: e.g. a defended model that predicts one class, a comparison with a part that could not be made
    warnings: list[str] = Field(default_factory=list)


class RequirementChange(_Strict):
    """One requirement compared between a previous audit (old) and this one (new)."""

    id: str
    metric: str
    old_value: float | None = None
    old_ci: list[float] | None = None
    old_verdict: Verdict | None = None  # None: the requirement is new
    new_value: float | None = None
    new_ci: list[float] | None = None
    new_verdict: Verdict | None = None  # None: the requirement was dropped
    threshold_changed: bool = False
    change: Literal["improved", "unchanged", "worsened", "added", "removed"]
    regression: bool
    reason: str = ""


class ArtefactChange(_Strict):
    """Whether an audited artefact (model, data, policy) is the same file as in the previous audit."""

    artefact: Literal["model", "data", "policy"]
    old_sha256: str
    new_sha256: str
    changed: bool
    note: str = ""


class Recertification(_Strict):
    """This audit compared with a previous one (`--baseline OLD.json`, `amulet-audit diff`)."""

    baseline_path: str = ""
    baseline_finished_at: str
    baseline_verdict: str
    baseline_tool_version: str = ""
    finished_at: str
    interval_days: float  # days between the two audits
    period_days: int | None = None  # the (new) policy's recertification period
    lapsed: bool | None = None  # the interval exceeded the period: the previous audit had expired
    valid_until: str | None = None  # this audit's finish date + period (ISO date)
    artefacts: list[ArtefactChange] = Field(default_factory=list)
    requirements: list[RequirementChange] = Field(default_factory=list)
    regression: bool
    notes: list[str] = Field(default_factory=list)


class CopyFidelity(_Strict):
    """One copy of the audited architecture trained with the data spec's recipe on the training split (the audit
    seed), compared with the audited model on the holdout records. Every attack that trains copies (reference and
    shadow models, poisoned copies, an extraction surrogate) and every defended model relies on that recipe; when
    the copy does not reproduce the audited model, their values may under-state the risk."""

    accuracy_gap: float | None = Field(None, description="Holdout accuracy of the copy minus that of the audited "
                                                         "model (a difference of fractions); null when not measured.")
    accuracy_gap_ci: list[float] | None = Field(None, description="[low, high] of the gap at the audit's confidence "
                                                                  "(normal approximation of the paired difference).")
    agreement: float | None = Field(None, description="Share of holdout records on which the copy predicts the "
                                                      "audited model's label; null when not measured.")
    agreement_ci: list[float] | None = Field(None, description="[low, high], exact binomial.")
    audited_accuracy: float | None = None
    copy_accuracy: float | None = None
    n: int = Field(0, description="Holdout records compared.")
    max_accuracy_gap: float = Field(0.03, description="The copy reproduces the model when |accuracy_gap| is at most "
                                                      "this ...")
    min_agreement: float = Field(0.9, description="... and agreement at least this: the audited model's holdout "
                                                  "accuracy, at most 0.9.")
    faithful: bool | None = Field(None, description="Whether the copy reproduces the audited model; null when not "
                                                    "measured.")
    warning: str = Field("", description="The sentence every requirement relying on trained copies carries when the "
                                         "copy is not faithful.")
    not_measured: str = Field("", description="Why no copy was trained (e.g. a label-only model).")
    seconds: float = 0.0


class AuditResult(_Strict):
    schema_version: str = SCHEMA_VERSION
    converted_from: str | None = Field(None, description="The schema version of the file this result was read from, "
                                                         "when `read_results` converted an older one.")
    tool: ToolInfo
    verdict: Literal["pass", "fail", "indeterminate"]
    model: ModelInfo
    data: DataInfo
    policy: PolicyInfo
    requirements: list[RequirementResult]
    runs: list[Run] = Field(default_factory=list)  # every attack run, on the audited and on the defended models
    model_output: Literal["logits", "log_probabilities", "probabilities", "single_logit", "labels"] | None = Field(
        None, description="What the model outputs, as the audit read it (detected, or the data spec's `output`): "
                          "every score was read through it and every trained copy trained by it; null in results "
                          "written before output conventions were recorded.")
    copy_fidelity: CopyFidelity | None = Field(None, description="A copy trained with the data spec's recipe "
                                                                 "compared with the audited model; null in results "
                                                                 "written before it was recorded.")
    interactions: list[Interaction] = Field(default_factory=list)
    # each combination of defenses compared with each of its defenses alone, on the risks that one is meant for;
    # flagged where combining undid what it achieved (flags controlled over these rows as one family)
    combined: list[Interaction] = Field(default_factory=list)
    defenses: list[DefenseResult] = Field(default_factory=list)
    seed: int
    profile: str = "standard"
    confidence: float = 0.95
    environment: dict[str, Any] = Field(default_factory=dict)
    started_at: str
    finished_at: str
    timings: dict[str, float] = Field(default_factory=dict)  # seconds of the audit's stages ("total"); runs carry their own
    recertification: Recertification | None = None  # comparison with a previous audit (--baseline)
    # Set by every rendering: what the report cannot show as these results hold it, e.g. characters of the data and
    # policy names that no installed font has, which print as boxes (amulet_audit.report.fonts).
    report_warnings: list[str] = Field(default_factory=list)

    def run_of(self, requirement: RequirementResult) -> Run | None:
        """The run that measured `requirement` (a row of `requirements` or of a defense's), or None."""
        return self.runs_by_id().get(requirement.run)

    def runs_by_id(self) -> dict[str, Run]:
        return {r.id: r for r in self.runs}
