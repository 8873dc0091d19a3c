"""End to end: the shipped examples trained and audited through the command line, as a user would."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ADULT, AMULET, ROOT


def train(example: str, out, *args) -> None:
    done = subprocess.run([sys.executable, ROOT / "examples" / example / "train.py", "--out", out, *map(str, args)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def audit(model, out, *args, policy="eu_ai_act"):
    done = subprocess.run([*AMULET, model, "--policy", policy, "--out", out, "--profile", "quick", "--quiet", *args],
                          capture_output=True, text=True)
    assert done.returncode in (0, 1), done.stderr
    return done, json.loads((out / "results.json").read_text())


@pytest.mark.slow
@pytest.mark.skipif(not ADULT.exists(), reason="needs ../shared/data/adult/adult.data")
def test_adult_audit_end_to_end(tmp_path):
    train("adult", tmp_path / "adult", "--data-file", ADULT, "--n-train", 6000, "--n-holdout", 6000, "--epochs", 10)
    model = tmp_path / "adult" / "model.pt"
    done, result = audit(model, tmp_path / "report")  # data spec: the sidecar model.data.yaml
    assert {p.name for p in (tmp_path / "report").iterdir()} >= {"report.html", "report.pdf", "results.json"}
    rows = {r["id"]: r for r in result["requirements"]}
    details = {r["id"]: r["details"] for r in result["runs"]}  # each requirement's evidence, by its run id
    assert result["data"]["n_train"] == 6000 and result["data"]["sensitive"] == ["sex", "race"]
    # Adult's income labels carry a large gap between the sexes; the model reproduces it
    assert rows["bias-impact-ratio"]["verdict"] == "fail"
    assert details[rows["bias-impact-ratio"]["run"]]["attribute"] in ("sex", "race")
    assert 0.75 < rows["declared-accuracy"]["value"] < 0.9
    assert done.returncode == 1 and result["verdict"] == "fail"
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Female" in html and "bias-impact-ratio" in html
    # the four privacy risks are measured, each with its chart
    for rid in ("membership-privacy-lira", "attribute-inference", "data-reconstruction", "distribution-inference"):
        assert rows[rid]["value"] is not None and rows[rid]["verdict"] != "not_applicable", rid
    assert details[rows["membership-privacy-lira"]["run"]]["reference_trainer"] == "vectorised"
    for title in ("Membership-inference ROC of every attack (log-log)", "Attribute inference per sex group",
                  "Meta-classifier scores of the reference models"):
        assert f'chart-title">{title}<' in html, title


@pytest.mark.slow
def test_digits_image_audit_end_to_end(tmp_path):
    train("digits", tmp_path / "digits")
    done, result = audit(tmp_path / "digits" / "model.pt", tmp_path / "report", "--no-pdf", policy=ROOT / "tests" / "policies" / "every_risk_kind.yaml")
    rows = {r["id"]: r for r in result["requirements"]}
    # no sensitive attribute: fairness cannot be assessed, and the audit says so rather than passing it
    assert rows["bias-impact-ratio"]["verdict"] == "not_applicable"
    assert "sensitive" in rows["bias-impact-ratio"]["reason"]
    assert result["verdict"] != "pass"
    ev = rows["evasion-robustness"]
    assert next(r for r in result["runs"] if r["id"] == ev["run"])["details"]["input_range"] == [0.0, 1.0]
    assert ev["value"] < rows["declared-accuracy"]["value"] > 0.9
    # privacy: membership and reconstruction are measured (the reconstructions drawn as images); the attribute and
    # distribution attacks need a sensitive attribute, which digits has not
    assert rows["membership-privacy-lira"]["value"] is not None and rows["data-reconstruction"]["value"] is not None
    assert rows["attribute-inference"]["verdict"] == rows["distribution-inference"]["verdict"] == "not_applicable"
    html = (tmp_path / "report" / "report.html").read_text()
    assert 'chart-title">Membership-inference ROC of every attack (log-log)<' in html
    assert 'chart-title">Reconstructed inputs, one per class<' in html and "data:image/png;base64" in html
