"""Recertification: `diff` between two audits, `--baseline`, the report folder manifest and `verify`, and the
PDF/A-3b report with results.json embedded."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from amulet_audit.results import read_results
from amulet_audit.results.diff import compare, worse_beyond_intervals
from amulet_audit.results.model import AuditResult, MetricInfo, Threshold, Verdict

from conftest import AMULET


def run(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*AMULET, *map(str, args)], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def audited(tabular, tmp_path_factory) -> Path:
    """One real audit (GDPR policy, quick profile, with PDF) of the synthetic biased model: its report folder."""
    out = tmp_path_factory.mktemp("audit") / "report"
    done = run(tabular, "--policy", "gdpr", "--profile", "quick", "--out", out, "--quiet", "--no-cache")
    assert done.returncode in (0, 1), done.stderr
    return out


@pytest.fixture()
def old(audited) -> AuditResult:
    return read_results(audited / "results.json")


def _copy(audited: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(audited, dst)
    return dst


# --- the PDF ---------------------------------------------------------------------------------------


def test_pdf_is_pdf_a_3b_and_embeds_results_json(audited):
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO((audited / "report.pdf").read_bytes()))
    attached = reader.attachments["results.json"][0]
    assert attached == (audited / "results.json").read_bytes()
    xmp = reader.trailer["/Root"]["/Metadata"].get_object().get_data().decode("utf-8", "replace")
    assert re.search(r"pdfaid:part(=\"|>)3", xmp) and re.search(r"pdfaid:conformance(=\"|>)B", xmp), xmp
    text = "".join(page.extract_text() for page in reader.pages)
    assert "Traceability to the regulation" in text and "Test log" in text


def test_report_carries_regulation_status_traceability_and_test_log(audited, old):
    from amulet_audit.report.compliance import results_sha256

    html = (audited / "report.html").read_text(encoding="utf-8")
    assert "in force since 25 May 2018" in html  # GDPR's effective date, from the policy
    assert "every 365 days" in html
    assert results_sha256(old) in html  # the results.json digest in the test log
    assert results_sha256(old) == hashlib.sha256((audited / "results.json").read_bytes()).hexdigest()
    for digest in (old.model.sha256, old.data.sha256, old.policy.sha256):
        assert digest in html
    assert "GDPR Art. 5(1)(f)" in html and "benchmark" in html


# --- verify ----------------------------------------------------------------------------------------


def test_verify_passes_an_untouched_folder(audited):
    done = run("verify", audited)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "intact" in done.stdout
    manifest = json.loads((audited / "manifest.json").read_text())
    assert set(manifest["files"]) == {"results.json", "report.html", "report.pdf"}


@pytest.mark.parametrize("name", ["results.json", "report.html"])
def test_verify_catches_an_edited_file(audited, tmp_path, name):
    folder = _copy(audited, tmp_path)
    path = folder / name
    text = path.read_text(encoding="utf-8")
    edited = text.replace('"verdict": "fail"', '"verdict": "pass"', 1) if name == "results.json" else text.replace("FAIL", "PASS", 1)
    if edited == text:  # nothing to flip: change one character instead
        edited = text.replace("0.", "1.", 1)
    path.write_text(edited, encoding="utf-8")
    done = run("verify", folder)
    assert done.returncode == 1, done.stdout
    assert f"{name}: altered" in done.stdout
    if name == "results.json":  # the PDF's embedded copy no longer matches either
        assert "embedded in the PDF differs" in done.stdout


def test_verify_bad_input_is_exit_2(tmp_path):
    assert run("verify", tmp_path / "missing").returncode == 2
    tmp_path.joinpath("results.json").write_text("{}")
    done = run("verify", tmp_path)
    assert done.returncode == 2 and "manifest.json" in done.stderr


# --- diff (pure functions) ---------------------------------------------------------------------------


def _with(result: AuditResult, rid: str, **changes) -> AuditResult:
    rows = [r.model_copy(update=changes) if r.id == rid else r for r in result.requirements]
    return result.model_copy(update={"requirements": rows})


def test_unchanged_pair_has_no_regression(old):
    rec = compare(old, old)
    assert not rec.regression
    assert {c.change for c in rec.requirements} == {"unchanged"}
    assert not any(a.changed for a in rec.artefacts)
    assert rec.interval_days == 0 and rec.period_days == 365 and rec.lapsed is False


def test_verdict_that_worsens_is_a_regression(old):
    first = old.requirements[0]
    assert first.metric == "auc" and first.threshold.op == "<="
    # a passing baseline (the real audit's may be indeterminate: the loss attack may miss its positive control)
    old = _with(old, first.id, verdict=Verdict.PASS, reason="")
    new = _with(old, first.id, value=0.7, ci=[0.68, 0.72], verdict=Verdict.FAIL)
    rec = compare(old, new)
    change = next(c for c in rec.requirements if c.id == first.id)
    assert rec.regression and change.regression and change.change == "worsened"
    assert "verdict worsened from pass to fail" in change.reason


def test_metric_that_worsens_beyond_both_intervals_is_a_regression_even_when_it_still_passes(old):
    base = _with(old, "membership-auc", value=0.50, ci=[0.49, 0.51], verdict=Verdict.PASS)
    drift = _with(old, "membership-auc", value=0.55, ci=[0.54, 0.56], verdict=Verdict.PASS)
    noise = _with(old, "membership-auc", value=0.505, ci=[0.495, 0.515], verdict=Verdict.PASS)
    assert compare(base, drift).regression
    assert not compare(base, noise).regression  # within the intervals: sampling noise
    assert compare(drift, base).requirements[0].change == "improved" and not compare(drift, base).regression
    # direction is the metric's own (metric_info): for a metric where higher is better, lower is worse
    higher_better = base.requirements[0].model_copy(update={
        "threshold": Threshold(op=">=", value=0.4), "metric_info": MetricInfo(higher_is_worse=False, unit="auc")})
    lower = higher_better.model_copy(update={"value": 0.45, "ci": [0.44, 0.46]})
    assert worse_beyond_intervals(higher_better, lower) and not worse_beyond_intervals(lower, higher_better)


def test_changed_model_and_lapsed_period_are_reported(old):
    later = old.model_copy(update={
        "finished_at": "2031-01-01T00:00:00+00:00",
        "model": old.model.model_copy(update={"sha256": "0" * 64}),
    })
    rec = compare(old, later)
    model = next(a for a in rec.artefacts if a.artefact == "model")
    assert model.changed and "Art. 43(4)" in model.note
    assert rec.lapsed is True and any("expired" in n for n in rec.notes)
    assert not rec.regression  # a new model or an old baseline alone is not a regression


def test_added_and_removed_requirements_are_listed(old):
    fewer = old.model_copy(update={"requirements": old.requirements[1:]})
    rec = compare(old, fewer)
    assert [c.change for c in rec.requirements if c.id == old.requirements[0].id] == ["removed"]
    assert [c.change for c in compare(fewer, old).requirements if c.id == old.requirements[0].id] == ["added"]


# --- results of schema 1.x ------------------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent / "golden"


def _golden(tmp_path: Path, version: str) -> Path:
    """The golden demo audit as schema `version` wrote it (tests/golden/README.md), as a plain file."""
    path = tmp_path / f"results-{version}.json"
    path.write_bytes(gzip.decompress((GOLDEN / f"demo-results-{version}.json.gz").read_bytes()))
    return path


def test_a_1x_file_is_converted_on_read_into_the_runs_its_requirements_copied(tmp_path):
    raw = json.loads(_golden(tmp_path, "1.1").read_text())
    old, new = read_results(_golden(tmp_path, "1.1")), read_results(_golden(tmp_path, "2.0"))
    assert (old.schema_version, old.converted_from, new.converted_from) == ("2.0", "1.1", None)
    # the same audit: requirements, the runs they point to (configuration and evidence), defenses, interactions
    def rows(result):
        return [(r.id, r.value, r.ci, r.verdict, r.run, r.metric_info.higher_is_worse)
                for r in result.requirements + [q for d in result.defenses for q in d.requirements]]
    assert rows(old) == rows(new)
    assert [i.model_dump() for i in old.interactions] == [i.model_dump() for i in new.interactions]
    assert [(r.id, r.attack, r.params, r.defense) for r in old.runs] == [(r.id, r.attack, r.params, r.defense) for r in new.runs]
    for a, b in zip(old.runs, new.runs):  # a cache hit is the only difference between the two real runs
        assert {k: v for k, v in a.details.items() if k != "reference_models_from_cache"} == \
               {k: v for k, v in b.details.items() if k != "reference_models_from_cache"}, a.id
    # each run once, where 1.x copied it into every requirement reading it (pgd: 3 requirements; x4 defenses)
    assert len(old.runs) == 10 * 5 and sum(r["attack"] == "pgd" for r in raw["requirements"]) == 3
    # durations move from the string-keyed timings onto the runs; what 1.x did not record stays empty
    pgd = next(r for r in old.runs if r.id == "r1")
    assert pgd.seconds == raw["timings"]['attack:pgd:{"eps": 0.1, "norm": "linf", "steps": 20}']
    assert next(r for r in old.runs if r.id == "dp_sgd/r9").seconds == raw["timings"]['dp_sgd: attack:backdoor:{"fraction": 0.1}']
    assert old.timings == {"total": raw["timings"]["total"]}
    assert [d.training_seconds for d in old.defenses] == [raw["timings"][f"defense:{d.name}"] for d in old.defenses]
    assert {r.ci_method for r in old.requirements} == {""} and {r.metric_info.unit for r in old.requirements} == {""}
    assert all(r.ci_method for r in new.requirements if r.value is not None)
    # and it compares with a 2.0 audit of the same model as unchanged
    rec = compare(old, new)
    assert not rec.regression and {c.change for c in rec.requirements} == {"unchanged"}


def test_diff_and_render_read_a_1x_file(tmp_path):
    old, new = _golden(tmp_path, "1.1"), _golden(tmp_path, "2.0")
    done = run("diff", old, new)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "No regression" in done.stdout and "evasion-robustness" in done.stdout
    done = run("render", old, "--out", tmp_path / "report", "--no-pdf")
    assert done.returncode == 0, done.stderr
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "2.0 (read from a 1.1 file)" in html and "membership-privacy-lira" in html
    unknown = tmp_path / "future.json"
    unknown.write_text(json.dumps({**json.loads(new.read_text()), "schema_version": "3.0"}))
    done = run("render", unknown, "--out", tmp_path / "x")
    assert done.returncode == 2 and "schema_version 3.0 is not supported" in done.stderr


# --- the commands ----------------------------------------------------------------------------------


def test_diff_command_exit_codes(audited, old, tmp_path):
    same = run("diff", audited / "results.json", audited / "results.json")
    assert same.returncode == 0, same.stdout + same.stderr
    assert "No regression" in same.stdout and "membership-auc" in same.stdout

    worse = _with(old, "membership-auc", value=0.9, ci=[0.88, 0.92], verdict=Verdict.FAIL)
    new_path = tmp_path / "new.json"
    new_path.write_text(worse.model_dump_json(indent=2))
    regressed = run("diff", audited / "results.json", new_path)
    assert regressed.returncode == 1
    assert "REGRESSION" in regressed.stdout
    as_json = json.loads(run("diff", audited / "results.json", new_path, "--json").stdout)
    assert as_json["regression"] is True

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run("diff", bad, new_path).returncode == 2
    assert run("diff", tmp_path / "nope.json", new_path).returncode == 2


@pytest.mark.slow
def test_audit_with_baseline_adds_the_recertification_section(audited, tabular, tmp_path):
    out = tmp_path / "again"
    done = run(tabular, "--policy", "gdpr", "--profile", "quick", "--out", out, "--quiet", "--no-pdf",
               "--baseline", audited / "results.json", "--exit-zero")
    assert done.returncode == 0, done.stderr
    result = read_results(out / "results.json")
    assert result.recertification is not None and not result.recertification.regression
    assert result.recertification.baseline_finished_at == read_results(audited / "results.json").finished_at
    assert result.policy.recertification_days == 365
    assert all(r.basis == "benchmark" for r in result.requirements)
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="recertification"' in html and "NO REGRESSION" in html
    assert run("verify", out).returncode == 0  # no PDF: the manifest records what was written
    # a bad baseline is refused before any work
    bad = run(tabular, "--policy", "gdpr", "--out", tmp_path / "x", "--baseline", tmp_path / "missing.json")
    assert bad.returncode == 2 and "missing.json" in bad.stderr and not (tmp_path / "x").exists()
