"""The bundled regulation policies: each validates, cites its provisions, says who set each threshold, and runs
on a real model (UCI Adult, which has the two sensitive attributes the NYC LL144 intersections need)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from amulet_audit.core.errors import InputError
from amulet_audit.policy import bundled_policies, load_policy

from conftest import ADULT, AMULET, ROOT, context

EXPECTED = {"eu_ai_act", "gdpr", "nist_ai_rmf", "iso_42001", "nyc_ll144", "colorado_sb24_205"}


def _adult_train():
    spec = importlib.util.spec_from_file_location("_test_adult_train", ROOT / "examples" / "adult" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def adult(tmp_path_factory) -> Path:
    """A scripted MLP on a subsample of UCI Adult (1,000 members, 1,500 holdout records); returns the model path."""
    if not ADULT.is_file():
        pytest.skip(f"UCI Adult not found at {ADULT}")
    out = tmp_path_factory.mktemp("adult")
    _adult_train().main(["--out", str(out), "--data-file", str(ADULT), "--n-train", "1000", "--n-holdout", "1500",
                         "--epochs", "10", "--offline"])
    return out / "model.pt"


def test_the_bundled_policies_are_all_there():
    assert EXPECTED <= set(bundled_policies())


@pytest.mark.parametrize("stem", sorted(EXPECTED))
def test_bundled_policy_validates_cites_and_states_its_basis(stem):
    loaded = load_policy(stem)
    policy = loaded.policy
    assert policy.regulation is not None and policy.regulation.status and policy.regulation.effective
    assert policy.recertification is not None and policy.recertification.period_days >= 1
    raw = yaml.safe_load(loaded.path.read_text(encoding="utf-8"))
    for req in raw["requirements"]:
        assert req.get("cite"), f"{stem}: {req['id']} cites no provision"
    if stem != "eu_ai_act":  # eu_ai_act is appended to by other components; its own test covers it
        for req in raw["requirements"]:
            assert req.get("basis") in ("legal_rule", "benchmark"), f"{stem}: {req['id']} does not say who set the threshold"


def test_ll144_says_the_law_sets_no_threshold_and_uses_the_four_fifths_benchmark():
    policy = load_policy("nyc_ll144").policy
    assert "NO numeric threshold" in load_policy("nyc_ll144").path.read_text(encoding="utf-8")
    ratio = next(r for r in policy.requirements if r.metric == "impact_ratio")
    assert ratio.basis == "benchmark" and ratio.threshold.min == 0.8
    assert "29 CFR 1607.4(D)" in ratio.cite and any("5-301(a)(4)" in c for c in ratio.cite)
    assert ratio.attack.params["intersectional"] is True and ratio.attack.params["unknown"] == "exclude"
    assert policy.recertification.period_days == 365


def test_org_overlay_extends_and_tightens_eu_ai_act():
    base = {r.id: r for r in load_policy("eu_ai_act").policy.requirements}
    overlay = load_policy(str(ROOT / "examples" / "policies" / "org_overlay.yaml")).policy
    tightened = 0
    for r in overlay.requirements:
        if r.id in base:
            old, new = base[r.id].threshold, r.threshold
            assert old.op == new.op
            assert (new.value >= old.value) if new.op == ">=" else (new.value <= old.value), r.id
            tightened += new.value != old.value
    assert tightened >= 4 and set(base) <= {r.id for r in overlay.requirements}
    assert overlay.recertification.period_days < load_policy("eu_ai_act").policy.recertification.period_days


@pytest.mark.slow
@pytest.mark.parametrize("stem", sorted(EXPECTED - {"eu_ai_act"}))
def test_bundled_policy_runs_on_a_real_model(adult, stem):
    """A quick-profile audit of each regulation policy on Adult: every requirement is judged, and the report
    renders with the regulation's status, the traceability table and the test log. (eu_ai_act, with its
    defenses, is audited end to end by tests/test_cli.py.)"""
    from markupsafe import escape

    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.report import render_html
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.run import run_audit

    model, data = load_model(adult), load_data(adult.with_name("model.data.yaml"))
    loaded = load_policy(stem)
    result = run_audit(model, data, loaded, seed=0, profile=PROFILES["quick"])
    assert [r.id for r in result.requirements] == [r.id for r in loaded.policy.requirements]
    measured = [r for r in result.requirements if r.value is not None]
    assert measured, f"{stem}: nothing was measured"
    html = render_html(result)
    assert 'id="traceability"' in html and 'id="testlog"' in html
    for cite in {c for r in result.requirements for c in r.cite}:
        assert str(escape(cite)) in html
    if stem == "nyc_ll144":
        details = result.run_of(result.requirements[0]).details
        assert "sex × race" in details["by_attribute"]
        assert "Selection rates and impact ratios by category" in html
        assert "Female × Black" in html
        # the LL144 impact ratio is the lowest over sex, race and intersections: never above a single attribute's
        assert result.requirements[0].value is not None
        for attr in ("sex", "race"):
            assert result.requirements[0].value <= details["by_attribute"][attr]["impact_ratio"] + 1e-12


def _policy(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text("policy: p\ntitle: t\nrequirements:\n" + body, encoding="utf-8")
    return path


@pytest.mark.parametrize("body, expected", [
    ("  - id: x\n    risk: membership_inferense\n    metric: auc\n    threshold: {max: 0.6}\n",
     ["unknown risk 'membership_inferense'", "did you mean 'membership_inference'"]),
    ("  - id: x\n    risk: discrimination\n    metric: impact_ration\n    threshold: {min: 0.8}\n",
     ["impact_ration", "did you mean 'impact_ratio'"]),
    ("  - id: x\n    risk: discrimination\n    metric: impact_ratio\n    threshold: {min: 0.8}\n    rationle: x\n",
     ["line 8", "unknown key 'rationle'", "did you mean 'rationale'"]),
    ("  - id: x\n    risk: discrimination\n    attack: {name: group_fairnes}\n    metric: impact_ratio\n    threshold: {min: 0.8}\n",
     ["unknown attack 'group_fairnes'", "did you mean 'group_fairness'"]),
    ("  - id: x\n    risk: discrimination\n    attack: {name: group_fairness, params: {intersectionall: true}}\n"
     "    metric: impact_ratio\n    threshold: {min: 0.8}\n", ["no parameter 'intersectionall'", "intersectional"]),
])
def test_unknown_names_are_exit_2_with_the_closest_valid_name(tmp_path, body, expected):
    path = _policy(tmp_path, body)
    proc = subprocess.run([*AMULET, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message
    for part in expected:
        assert part in message, message
    with pytest.raises(InputError):
        load_policy(str(path))


def test_recertification_key_is_validated(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("policy: p\ntitle: t\nrecertification: {period_days: 0}\nrequirements:\n  - id: x\n    risk: evasion\n"
                    "    metric: robust_accuracy\n    threshold: {min: 0.5}\n", encoding="utf-8")
    with pytest.raises(InputError, match="period_days"):
        load_policy(str(path))


# --- GroupFairness: intersections and unknown categories ---------------------------------------------


def test_intersectional_groups_and_unknown_category(tabular_inputs):
    """Intersections join the attributes; missing values form one Unknown group that is counted, and with
    unknown='exclude' it is listed but left out of the comparison (6 RCNY § 5-301(a)(6))."""
    import dataclasses

    from amulet_audit.risks.discrimination import GroupFairness

    model, data = tabular_inputs
    rng = np.random.default_rng(0)
    race_h = rng.choice(["A", "B"], len(data.y_holdout)).astype(object)
    race_h[:60] = "nan"  # pandas' text for a missing value
    race_h[60:100] = ""
    sex_h = data.sensitive_holdout["sex"]
    race_t = rng.choice(["A", "B"], len(data.y_train))
    with_race = dataclasses.replace(data, sensitive_holdout={"sex": sex_h, "race": race_h.astype(str)},
                                    sensitive_train={"sex": data.sensitive_train["sex"], "race": race_t})
    grouped = GroupFairness(intersectional=True).run(context(model, with_race))
    excluded = GroupFairness(intersectional=True, unknown="exclude").run(context(model, with_race))
    plain = GroupFairness().run(context(model, with_race))

    inter = grouped.details["by_attribute"]["sex × race"]
    names = {g["group"] for g in inter["groups"]}
    assert {"F × A", "F × B", "M × A", "M × B", "Unknown"} == names
    assert inter["n_unknown"] == 100 and grouped.details["by_attribute"]["race"]["n_unknown"] == 100
    assert sum(g["count"] for g in inter["groups"]) == len(data.y_holdout)  # every record is counted
    unknown_row = next(g for g in inter["groups"] if g["group"] == "Unknown")
    assert unknown_row["compared"] is True and unknown_row["unknown"] is True
    ex_row = next(g for g in excluded.details["by_attribute"]["sex × race"]["groups"] if g["group"] == "Unknown")
    assert ex_row["compared"] is False and ex_row["count"] == 100
    # per-group impact ratio: rate / highest compared rate
    rows = [g for g in excluded.details["by_attribute"]["sex × race"]["groups"] if g["compared"]]
    best = max(g["selection_rate"] for g in rows)
    for g in rows:
        assert g["impact_ratio"] == pytest.approx(g["selection_rate"] / best)
    assert min(g["impact_ratio"] for g in rows) == pytest.approx(
        excluded.details["by_attribute"]["sex × race"]["impact_ratio"])
    # the worst over attributes and intersections counts; without intersections nothing changes for `sex`
    assert grouped.metrics["impact_ratio"].value <= plain.metrics["impact_ratio"].value + 1e-12
    assert plain.details["by_attribute"]["sex"]["impact_ratio"] == pytest.approx(
        grouped.details["by_attribute"]["sex"]["impact_ratio"])
    assert "sex × race" not in plain.details["by_attribute"]


def test_intersectional_with_one_attribute_says_so(tabular_inputs):
    from amulet_audit.risks.discrimination import GroupFairness

    model, data = tabular_inputs
    out = GroupFairness(intersectional=True).run(context(model, data))
    assert any("two or more sensitive attributes" in w for w in out.details["warnings"])
    assert out.metrics["impact_ratio"].value == pytest.approx(GroupFairness().run(context(model, data)).metrics["impact_ratio"].value)
