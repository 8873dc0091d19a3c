"""Positive controls (run/controls.py): each privacy and poisoning attack is run again, with the same parameters and
budget, on a deliberately vulnerable control; a PASS whose attack did not detect its control is INDETERMINATE."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from conftest import make_tabular

# On the small synthetic task (an MLP with 128 hidden units) the loss attack's AUC on the audited model is near 0.5.
# On the overfit control its membership advantage is above 0.15 (detected), its AUC far below 0.95 (not detected),
# and nothing is below an AUC of 0.3.
POLICY = {
    "policy": "controls", "title": "Membership requirements the control detects, does not detect, and fails",
    "interactions": {"defenses": ["outlier_removal"], "tolerance": 0.02},
    "requirements": [
        {"id": "advantage", "risk": "membership_inference", "attack": {"name": "loss"}, "metric": "advantage",
         "threshold": {"max": 0.15}},
        {"id": "auc-lenient", "risk": "membership_inference", "attack": {"name": "loss"}, "metric": "auc",
         "threshold": {"max": 0.95}},
        {"id": "auc-impossible", "risk": "membership_inference", "attack": {"name": "loss"}, "metric": "auc",
         "threshold": {"max": 0.3}},
        {"id": "accuracy", "risk": "evasion", "attack": {"name": "pgd", "params": {"eps": 0.05, "steps": 5}},
         "metric": "clean_accuracy", "threshold": {"min": 0.5}},
    ],
}


def _audit(tmp_path, policy=POLICY):
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit

    path = make_tabular(tmp_path / "m", n=1000, epochs=15, hidden=128)
    (tmp_path / "policy.yaml").write_text(yaml.safe_dump(policy))
    return run_audit(load_model(path), load_data(path.with_name("model.data.yaml")),
                     load_policy(str(tmp_path / "policy.yaml")), seed=0, profile=PROFILES["quick"])


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    return _audit(tmp_path_factory.mktemp("controls"))


def test_detected_control_keeps_pass_undetected_makes_it_indeterminate_fail_stays(audited):
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.run.controls import NO_POWER

    rows = {r.id: r for r in audited.requirements}
    adv, lenient, impossible = rows["advantage"], rows["auc-lenient"], rows["auc-impossible"]
    for r in (adv, lenient, impossible):  # one job, one control, read against each requirement's own threshold
        assert r.control is not None and r.control.attack == "loss" and not r.control.not_available
        assert "500 training records" in r.control.description and "without weight decay" in r.control.description
        assert r.control.metric == r.metric and r.control.threshold == r.threshold
        assert r.control.ci[0] <= r.control.value <= r.control.ci[1]
    assert adv.control.value > 0.15 and adv.control.detected is True
    assert adv.value < 0.15 and adv.verdict is Verdict.PASS and not adv.reason
    assert 0.5 < lenient.control.value < 0.95 and lenient.control.detected is False
    assert lenient.ci[1] < 0.95  # its interval alone would pass ...
    assert lenient.verdict is Verdict.INDETERMINATE  # ... but the attack could not have found the risk
    assert lenient.reason.startswith(NO_POWER + ": on a deliberately vulnerable control (a copy of the audited")
    assert f"auc {lenient.control.value:.3g}" in lenient.reason and "<= 0.95" in lenient.reason
    assert impossible.verdict is Verdict.FAIL and impossible.control.detected is True  # a FAIL stays a FAIL
    assert rows["accuracy"].control is None  # evasion has no positive control here
    assert audited.verdict != "pass"
    assert audited.timings["positive_controls"] > 0


def test_defended_models_read_the_same_control(audited):
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.run.controls import NO_POWER

    (defense,) = audited.defenses
    rows = {r.id: r for r in defense.requirements}
    base = {r.id: r for r in audited.requirements}
    assert rows["auc-lenient"].control == base["auc-lenient"].control
    assert rows["auc-lenient"].verdict is not Verdict.PASS
    if rows["auc-lenient"].ci[1] < 0.95:  # it would have passed on the defended model too
        assert rows["auc-lenient"].reason.startswith(NO_POWER)
    assert rows["advantage"].control.detected is True


def test_results_json_carries_the_control_and_the_report_shows_it(audited, tmp_path):
    from amulet_audit.report.document import build_document
    from amulet_audit.report.evidence_controls import HEADING
    from amulet_audit.results.io import read_results, write_results

    out = tmp_path / "results.json"
    write_results(audited, out)
    raw = json.loads(out.read_text())
    row = next(r for r in raw["requirements"] if r["id"] == "auc-lenient")
    control = row["control"]
    assert control["attack"] == "loss" and control["detected"] is False and control["metric"] == "auc"
    assert control["details"]["control_members"] == 500 and control["details"]["n_nonmembers"] == 500
    assert control["threshold"] == {"op": "<=", "value": 0.95} and control["seconds"] > 0
    assert next(r for r in raw["requirements"] if r["id"] == "accuracy")["control"] is None
    assert read_results(out) == audited  # the schema reads it back unchanged
    assert raw["schema_version"] == "2.0"

    doc = build_document(audited)
    section = next(s for s in doc.sections if s.risk == "membership_inference")
    (ev,) = [e for e in section.evidence if e.heading == HEADING]
    rows = {r[0]: r for r in ev.blocks[0].rows}
    assert set(rows) == {"advantage", "auc-lenient", "auc-impossible"}
    assert rows["auc-lenient"][5].startswith("no: the attack had no power") and rows["advantage"][5] == "yes"
    assert "500 training records" in rows["auc-lenient"][1]


def test_powerless_attack_turns_pass_into_indeterminate(tmp_path, monkeypatch):
    """An attack that scores records at random measures an AUC near 0.5 everywhere, the overfit control included."""
    from amulet_audit.core.attack import AttackResult
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.risks import membership

    def powerless(self, ctx):
        x, y, is_member = membership.balanced_sample(ctx, None)
        i_in, i_out = membership.balanced_indices(ctx, None)
        scores = np.random.default_rng(ctx.seed).random(len(y))
        metrics, details = membership.membership_metrics(scores, is_member, membership.member_records(ctx, i_in, i_out),
                                                         reps=ctx.profile.bootstrap_reps, seed=ctx.seed,
                                                         confidence=ctx.confidence)
        return AttackResult(metrics, details)

    monkeypatch.setattr(membership.LossAttack, "_run", powerless)
    policy = {"policy": "powerless", "title": "A powerless attack", "requirements": [
        {"id": "auc", "risk": "membership_inference", "attack": {"name": "loss"}, "metric": "auc",
         "threshold": {"max": 0.6}}]}
    (row,) = _audit(tmp_path, policy).requirements
    assert row.ci[1] < 0.6  # the attack found nothing, confidently ...
    assert row.control.value < 0.6 and row.control.detected is False  # ... nor on the control
    assert row.verdict is Verdict.INDETERMINATE and row.reason.startswith("the attack had no power at this budget: ")


def _row(verdict, op="<=", value=0.2, ci=(0.1, 0.3), threshold=0.5, rid="q"):
    from amulet_audit.results.model import MetricInfo, RequirementResult, Threshold

    return RequirementResult(id=rid, risk="poisoning", attack="backdoor", metric="attack_success_rate", value=value,
                             ci=list(ci), n=100, threshold=Threshold(op=op, value=threshold), verdict=verdict, run="r1",
                             metric_info=MetricInfo(higher_is_worse=True))


def test_mark_reads_the_threshold_of_each_row_and_leaves_other_verdicts():
    from amulet_audit.core.attack import AttackResult, Measurement
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.run.controls import Control, mark

    job = SimpleNamespace(key="backdoor:{}")
    plan = SimpleNamespace(job_of={"q": job, "p": job, "i": job})
    found = {job.key: Control("backdoor", {"fraction": 0.5}, "a stronger poison",
                              AttackResult({"attack_success_rate": Measurement(0.6, (0.55, 0.65), 100)}))}
    missed = {job.key: Control("backdoor", {"fraction": 0.5}, "a stronger poison",
                               AttackResult({"attack_success_rate": Measurement(0.3, (0.25, 0.35), 100)}))}
    rows = [_row(Verdict.PASS), _row(Verdict.FAIL, value=0.7, ci=(0.6, 0.8), rid="p"),
            _row(Verdict.INDETERMINATE, ci=(0.1, 0.6), rid="i")]
    mark(found, plan, rows)
    assert [r.verdict for r in rows] == [Verdict.PASS, Verdict.FAIL, Verdict.INDETERMINATE]
    assert rows[0].control.detected is True and rows[0].control.params == {"fraction": 0.5}
    rows = [_row(Verdict.PASS), _row(Verdict.FAIL, value=0.7, ci=(0.6, 0.8), rid="p")]
    mark(missed, plan, rows)
    assert rows[0].verdict is Verdict.INDETERMINATE and "a stronger poison" in rows[0].reason
    assert "attack_success_rate 0.3 [0.25, 0.35]" in rows[0].reason and "<= 0.5" in rows[0].reason
    assert rows[1].verdict is Verdict.FAIL and rows[1].control.detected is False


def test_model_without_trained_copies_says_why_there_is_no_control():
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.core.verdict import Verdict
    from amulet_audit.plan import Job
    from amulet_audit.run.controls import mark, positive_controls

    job = Job("loss", {}, ["q"])
    plan = SimpleNamespace(jobs=[job], job_of={"q": job})
    labels_only = SimpleNamespace(output="labels", format="torchscript")
    controls = positive_controls(labels_only, SimpleNamespace(), plan, seed=0, profile=PROFILES["quick"])
    assert controls[job.key].out is None
    reason = controls[job.key].not_available
    assert reason.startswith("no positive control: ") and "trainable copies" in reason and "labels only" in reason
    # no control can be trained at all: the attack's power is unknown, so a PASS is not one (a FAIL stays)
    row = _row(Verdict.PASS)
    mark(controls, plan, [row])
    assert row.verdict is Verdict.INDETERMINATE and row.control.not_available == reason and row.control.detected is None
    assert row.reason.startswith(reason) and "whether the attack could find the risk at this budget is unknown" in row.reason
    row = _row(Verdict.FAIL)
    mark(controls, plan, [row])
    assert row.verdict is Verdict.FAIL
