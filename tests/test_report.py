"""The report layer: AuditResult -> document -> HTML -> PDF, checked without running an audit."""

from __future__ import annotations

import io
import logging
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from amulet_audit.core.errors import InputError
from amulet_audit.report import render_html, render_pdf, write_report
from amulet_audit.report.document import Document, build_document
from amulet_audit.core.resources import policies_dir, templates_dir
from amulet_audit.results.model import AuditResult, Verdict

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
TRACED_WARNING = (
    "The model is a traced TorchScript module containing BatchNorm/Dropout layers: copies trained from it "
    "keep eval-mode behaviour, so membership attacks built on them are weaker. Save it with torch.jit.script "
    "or pass --arch."
)
VERDICT_LABELS = ("PASS", "FAIL", "INDETERMINATE", "NOT APPLICABLE")
EXTERNAL_REF = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?|url\(\s*["']?)\s*(?:https?:)?//""", re.I)


def _roc(points: int = 80, power: float = 0.8) -> dict[str, list[float]]:
    fpr = [0.0] + [10 ** (-4 + 4 * i / (points - 1)) for i in range(points)]
    return {"fpr": fpr, "tpr": [min(1.0, f**power) for f in fpr]}


def _result_dict() -> dict:
    evasion_details = {
        "norm": "linf",
        "eps": 0.1,
        "clean_accuracy": 0.831,
        "curve": [
            {"eps": e, "robust_accuracy": a, "ci": [a - 0.02, a + 0.02], "n": 2000}
            for e, a in [(0.0, 0.831), (0.025, 0.74), (0.05, 0.62), (0.1, 0.412), (0.15, 0.25), (0.2, 0.13)]
        ],
        "warnings": ["2 of 5 restarts did not converge; robust accuracy may be overestimated."],
    }
    membership_details = {"roc": _roc(), "n_members": 2000, "n_nonmembers": 2000, "auc": 0.61}
    groups = [
        {"group": "Female", "count": 5000, "selection_rate": 0.098, "tpr": 0.52, "fpr": 0.031, "accuracy": 0.91},
        {"group": "Male", "count": 10000, "selection_rate": 0.294, "tpr": 0.68, "fpr": 0.087, "accuracy": 0.81},
    ]
    fairness_details = {
        "attribute": "sex",
        "by_attribute": {
            "sex": {
                "groups": groups,
                "demographic_parity_difference": 0.196,
                "impact_ratio": 0.333,
                "equalized_odds_difference": 0.16,
                "accuracy_gap": 0.1,
            }
        },
    }

    def req(id_, risk, attack, metric, value, ci, n, op, threshold, verdict, details, **extra):
        return {
            "id": id_, "title": extra.pop("title", id_.replace("-", " ").capitalize()), "risk": risk,
            "attack": attack, "metric": metric, "value": value, "ci": ci, "n": n,
            "threshold": {"op": op, "value": threshold}, "verdict": verdict, "details": details, **extra,
        }

    pgd = {"eps": 0.1, "norm": "linf", "steps": 40}
    return {
        "tool": {"name": "amulet-audit", "version": "0.1.0"},
        "verdict": "fail",
        "model": {
            "path": "models/credit_mlp.pt", "sha256": "9f2c" * 16, "format": "torchscript",
            "parameters": 10_754, "architecture": "MLP(8→64→64→2)", "warnings": [TRACED_WARNING],
        },
        "data": {
            "path": "models/credit_mlp.data.yaml", "sha256": "41ab" * 16, "name": "credit-default",
            "files": {"data/credit.parquet": "d00d" * 16}, "n_train": 24_000, "n_holdout": 6_000,
            "n_features": 8, "classes": ["no", "yes"], "positive_label": "yes", "sensitive": ["sex"],
        },
        "policy": {
            "id": "eu-ai-act", "sha256": "77ce" * 16,
            "title": "EU AI Act — high-risk AI systems, technical robustness, data governance",
            "path": "policies/eu_ai_act.yaml",
            "regulation": {"name": "Regulation (EU) 2024/1689", "status": "in-force", "effective": "2026-08-02"},
        },
        "requirements": [
            req("evasion-robustness", "evasion", "pgd", "robust_accuracy", 0.412, [0.39, 0.434], 2000, ">=", 0.6,
                "fail", evasion_details, severity="high", cite=["Art. 15(5)", "Art. 15(1)"], params=pgd,
                title="Resilience against adversarial examples"),
            req("evasion-clean-accuracy", "evasion", "pgd", "clean_accuracy", 0.831, [0.814, 0.847], 2000, ">=",
                0.75, "pass", evasion_details, cite=["Art. 15(1)"], params=pgd),
            req("membership-auc", "membership_inference", "loss", "auc", 0.61, [0.593, 0.627], 4000, "<=", 0.6,
                "indeterminate", membership_details, severity="high", cite=["Art. 10(5)", "GDPR Art. 32"],
                reason="The 95 % interval [0.593, 0.627] straddles the threshold 0.60."),
            req("membership-tpr-low-fpr", "membership_inference", "loss", "tpr_at_fpr_0.001", 0.0045,
                [0.0021, 0.0085], 4000, "<=", 0.01, "pass", membership_details, cite=["Art. 10(5)"]),
            req("fairness-parity", "discrimination", "group_fairness", "demographic_parity_difference", 0.196,
                [0.181, 0.211], 15000, "<=", 0.1, "fail", fairness_details, cite=["Art. 10(2)(f)"],
                params={"attribute": "sex"}),
            req("extraction-fidelity", "model_extraction", "extraction", "fidelity", 0.93, [0.925, 0.935], 10000,
                "<=", 0.95, "pass", {"api": "probabilities", "query_budget": 10000, "fidelity": 0.93,
                                     "per_class": {"no": 0.94, "yes": 0.9}}, cite=["Art. 15(5)"]),
            req("reconstruction-similarity", "data_reconstruction", "model_inversion", "reconstruction_similarity",
                None, None, 0, "<=", 0.5, "not_applicable", {}, cite=["Art. 10(5)"],
                reason="Model inversion needs input_range in the data specification; none is given."),
        ],
        "interactions": [
            {"defense": "dp_sgd", "risk": "discrimination", "requirement": "fairness-parity",
             "metric": "demographic_parity_difference", "baseline": 0.196, "defended": 0.241, "delta": 0.045,
             "worse": True, "intended": False, "flagged": True},
            {"defense": "adversarial_training", "risk": "membership_inference", "requirement": "membership-auc",
             "metric": "auc", "baseline": 0.61, "defended": 0.612, "delta": 0.002, "worse": True,
             "intended": False, "flagged": False},
        ],
        "seed": 0,
        "profile": "standard",
        "confidence": 0.95,
        "environment": {"python": "3.11.7", "torch": "2.13.0", "platform": "Linux-x86_64",
                        "packages": {"numpy": "2.1.0", "opacus": "1.5.2", "fairlearn": "0.12.0"}},
        "started_at": "2025-11-22T14:02:11+00:00",
        "finished_at": "2025-11-22T14:09:47+00:00",
        "timings": {"load": 1.2, "pgd": 212.5, "loss": 95.3, "group_fairness": 0.8},
    }


@pytest.fixture(scope="module")
def result() -> AuditResult:
    return AuditResult.model_validate(_result_dict())


@pytest.fixture(scope="module")
def html(result: AuditResult) -> str:
    return render_html(result)


@pytest.fixture(scope="module")
def doc(result: AuditResult) -> Document:
    return build_document(result)


@pytest.fixture(scope="module")
def html_file(html: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def _distinct_colours(png: bytes | Path) -> int:
    from PIL import Image

    with Image.open(png if isinstance(png, Path) else io.BytesIO(png)) as img:
        colours = img.convert("RGB").getcolors(maxcolors=1 << 16)
    return len(colours) if colours is not None else 1 << 16


# --- content --------------------------------------------------------------------------------------


def test_html_has_every_requirement_verdict_and_chart(html: str, result: AuditResult) -> None:
    for req in result.requirements:
        assert req.id in html
    for verdict_label in VERDICT_LABELS:
        assert f"{verdict_label}</span>" in html
    assert html.count("<svg") >= 3
    assert "0.412 [0.390, 0.434]" in html
    assert "≥ 0.60" in html and "≤ 0.10" in html
    assert "Model inversion needs input_range" in html  # reason of the not-applicable row
    assert "straddles the threshold" in html  # reason of the indeterminate row
    assert "traced TorchScript module" in html  # model warning
    assert "restarts did not converge" in html  # attack warning
    assert "FLAGGED" in html and "dp_sgd" in html  # interactions
    assert "Prepared by" in html and "Reviewed by" in html and "Signature" in html


def test_html_is_self_contained(html: str) -> None:
    assert not EXTERNAL_REF.findall(html)
    assert "<script" not in html.lower()
    assert "<?xml" not in html and "<!DOCTYPE svg" not in html
    assert "<text" not in html  # chart text is drawn as paths: no font needed
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "element ids must be unique across the inlined charts"


def test_summary_lists_failures_first(doc: Document) -> None:
    verdicts = [row.verdict.key for row in doc.summary.rows]
    assert verdicts == sorted(verdicts, key=("fail", "indeterminate", "pass", "not_applicable").index)
    assert doc.summary.rows[0].id == "evasion-robustness"  # high severity before medium


def test_unknown_risk_and_empty_details_render_generic_sections(doc: Document) -> None:
    sections = {s.risk: s for s in doc.sections}
    extraction = sections["model_extraction"]
    assert [type(b).__name__ for b in extraction.evidence[0].blocks] == ["Table"]
    assert ("Query budget", "10,000") in extraction.evidence[0].blocks[0].rows
    reconstruction = sections["data_reconstruction"]
    assert reconstruction.evidence == ()
    assert reconstruction.rows[0].value == "—" and reconstruction.verdict.label == "NOT APPLICABLE"
    # One chart per attack run, not per requirement reading it.
    assert len(sections["evasion"].evidence) == 1


def test_malformed_details_do_not_break_the_report(result: AuditResult) -> None:
    broken = result.model_copy(deep=True)
    broken.requirements[0].details = {"curve": [{"eps": "big"}], "eps": "x"}
    broken.requirements[4].details = {"by_attribute": {"sex": {"groups": "oops"}}}
    html = render_html(broken)
    assert "evasion-robustness" in html and "fairness-parity" in html


def test_titles_are_escaped(result: AuditResult) -> None:
    hostile = result.model_copy(deep=True)
    hostile.requirements[0].title = "<script>alert(1)</script>"
    hostile.model.warnings = ['<img src=x onerror="alert(2)">']
    html = render_html(hostile)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


# --- organisation templates -------------------------------------------------------------------------


def test_user_template_overrides_one_block(tmp_path: Path, result: AuditResult) -> None:
    (tmp_path / "report.html.j2").write_text(
        '{% extends "amulet/report.html.j2" %}\n'
        '{% block logo %}<span class="org-logo">ACME Bank · Model Risk Office</span>{% endblock %}\n',
        encoding="utf-8",
    )
    html = render_html(result, templates_dir=tmp_path)
    assert '<span class="org-logo">ACME Bank · Model Risk Office</span>' in html
    assert '<span class="logo-name">amulet-audit</span>' not in html
    for req in result.requirements:  # everything else is still there
        assert req.id in html
    assert "Executive summary" in html and "Reproducibility appendix" in html and "<svg" in html


def test_user_partial_replaces_packaged_one(tmp_path: Path, result: AuditResult) -> None:
    (tmp_path / "partials").mkdir()
    (tmp_path / "partials" / "signoff.html.j2").write_text(
        '<section class="chapter" id="signoff"><h2>Approval</h2><p>Approved by {{ doc.generator }}</p></section>',
        encoding="utf-8",
    )
    html = render_html(result, templates_dir=tmp_path)
    assert "<h2>Approval</h2>" in html and "Reviewed by" not in html
    assert "Executive summary" in html


def test_broken_user_template_is_input_error(tmp_path: Path, result: AuditResult) -> None:
    (tmp_path / "report.html.j2").write_text('{% extends "amulet/report.html.j2" %}\n{% block logo %}', "utf-8")
    with pytest.raises(InputError, match=r"report\.html\.j2: line \d+"):
        render_html(result, templates_dir=tmp_path)
    with pytest.raises(InputError, match="not a folder"):
        render_html(result, templates_dir=tmp_path / "missing")


def test_packaged_resources_are_found() -> None:
    assert (templates_dir() / "report.html.j2").is_file()
    assert (policies_dir() / "eu_ai_act.yaml").is_file()


def test_import_is_light() -> None:
    code = "import sys, amulet_audit.report; print(sorted({'weasyprint', 'matplotlib'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"


# --- browsers and print -------------------------------------------------------------------------------


def test_chromium_loads_offline_without_errors(html_file: Path, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    errors: list[str] = []
    external: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("request", lambda req: None if req.url.startswith(("file:", "data:", "about:"))
                    else external.append(req.url))
            page.goto(html_file.as_uri(), wait_until="load")
            png = page.screenshot(full_page=True)
            (tmp_path / "screen.png").write_bytes(png)
        finally:
            browser.close()
    assert errors == []
    assert external == []
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        width, height = img.size
    assert width >= 1000 and height >= 3000
    assert _distinct_colours(png) > 16


def test_write_report_prints_a_pdf_with_content_on_every_page(
    result: AuditResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pypdf = pytest.importorskip("pypdf")
    out = tmp_path / "amulet-report"
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        written = write_report(result, out)
    assert [r.getMessage() for r in caplog.records if r.name.startswith("weasyprint")] == []
    assert written == [out / "report.html", out / "report.pdf"]
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.pdf"]  # no temporary files left
    pdf = out / "report.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")
    reader = pypdf.PdfReader(pdf)
    pages = len(reader.pages)
    assert pages >= 3
    text = "".join(p.extract_text() for p in reader.pages)
    assert "evasion-robustness" in text and f"Page 1 of {pages}" in text
    if shutil.which("pdftoppm") is None:
        pytest.skip("pdftoppm not installed (apt-get install -y poppler-utils)")
    subprocess.run(["pdftoppm", "-r", "40", "-png", str(pdf), str(tmp_path / "page")], check=True)
    pngs = sorted(tmp_path.glob("page-*.png"))
    assert len(pngs) == pages
    for png in pngs:
        assert _distinct_colours(png) > 1, f"{png.name} is blank"


def test_render_pdf_refuses_network_resources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    html = '<html><body><p>x</p><img src="http://example.invalid/logo.png"></body></html>'
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        path = render_pdf(html, tmp_path / "offline.pdf")
    assert path.read_bytes().startswith(b"%PDF")
    assert any("disallowed protocol" in r.getMessage() for r in caplog.records)


def test_write_report_without_pdf(result: AuditResult, tmp_path: Path) -> None:
    written = write_report(result, tmp_path, pdf=False)
    assert written == [tmp_path / "report.html"] and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_value_formatting() -> None:
    from amulet_audit.report.document import fmt_number, fmt_threshold, fmt_value_ci
    from amulet_audit.results.model import Threshold

    assert fmt_value_ci(0.8234, [0.805, 0.8401]) == "0.823 [0.805, 0.840]"
    assert fmt_value_ci(None, None) == "—"
    assert fmt_threshold(Threshold(op=">=", value=0.6)) == "≥ 0.60"
    assert fmt_threshold(Threshold(op="<=", value=0.001)) == "≤ 0.001"
    assert fmt_number(0.00045) == "0.00045" and fmt_number(0.00002) == "2.0e-05" and fmt_number(2000) == "2,000" and fmt_number(math.inf) == "inf"


def test_minimal_result_with_unknown_risks_renders() -> None:
    raw = _result_dict()
    raw.update(verdict="indeterminate", interactions=[], environment={}, timings={}, started_at="?")
    raw["model"]["warnings"] = []
    raw["data"]["files"] = {}
    base = raw["requirements"][0]
    raw["requirements"] = [
        {**base, "id": "new-risk", "risk": "watermark_removal", "attack": "finetune", "metric": "watermark_kept",
         "verdict": "indeterminate", "params": {}, "details": {"nested": {"a": [1, 2]}, "ratio": 0.5, "ok": True}},
        {**base, "id": "nothing-recorded", "risk": "poisoning", "attack": "label_flip", "metric": "accuracy_drop",
         "value": None, "ci": None, "n": 0, "verdict": "not_applicable", "details": {}, "reason": "No training recipe."},
    ]
    html = render_html(AuditResult.model_validate(raw))
    assert "new-risk" in html and "nothing-recorded" in html and "Watermark removal" in html
    assert "Unintended interactions" not in html and "<aside class=\"callout callout-warning\"" not in html
    assert "<svg" not in html  # nothing to chart, nothing broken


# --- regulator-facing parts: traceability, test log, recertification, LL144 table, PDF/A ---------------


def test_traceability_maps_each_provision_to_its_requirements_and_verdicts(doc: Document, result: AuditResult) -> None:
    table = doc.traceability.table
    provisions = [row[0] for row in table.rows if row[0]]
    cited = list(dict.fromkeys(c for r in result.requirements for c in r.cite))
    assert provisions == cited  # each provision once, in order of first citation
    # every (provision, requirement) pair appears, with the requirement's verdict
    pairs = sum(len(r.cite) for r in result.requirements)
    assert len(table.rows) == pairs
    current = None
    for row in table.rows:
        current = row[0] or current
        req = next(r for r in result.requirements if f"({r.id})" in row[1])
        assert current in req.cite and row[-1].key == req.verdict.value


def test_test_log_records_dated_digests_of_every_artefact(doc: Document, result: AuditResult, html: str) -> None:
    from amulet_audit.report.compliance import results_sha256

    values = {f.label: f.value for g in doc.test_log.groups for f in g.fields}
    assert values["Model"] == result.model.sha256 and values["Policy"] == result.policy.sha256
    assert values["Data (specification and files)"] == result.data.sha256
    assert values["Results (results.json)"] == results_sha256(result)
    assert values["Started (UTC)"] == result.started_at and values["Finished (UTC)"] == result.finished_at
    assert 'id="testlog"' in html and "Annex IV 2(g)" in html


def test_cover_states_regulation_status_and_recertification(result: AuditResult) -> None:
    from amulet_audit.report.compliance import regulation_status

    facts = {f.label: f.value for f in build_document(result).cover.facts}
    assert "2 August 2026" in facts["Regulation status"] and "after this audit" in facts["Regulation status"]
    assert regulation_status({"status": "in-force", "effective": "2018-05-25"}, "2026-01-01T00:00:00+00:00") == "in force since 25 May 2018"
    assert "voluntary" in regulation_status({"status": "guidance", "effective": "2023-01-26"}, "2026-01-01T00:00:00+00:00")
    assert facts["Recertification"] == "the policy sets no recertification period"
    with_period = result.model_copy(update={"policy": result.policy.model_copy(update={"recertification_days": 365})})
    facts = {f.label: f.value for f in build_document(with_period).cover.facts}
    assert facts["Recertification"] == "every 365 days; this audit must be repeated by 22 November 2026"


def test_recertification_section_renders_only_with_a_baseline(result: AuditResult, html: str) -> None:
    from amulet_audit.results.diff import compare

    assert 'id="recertification"' not in html
    worse_rows = [r.model_copy(update={"verdict": Verdict.FAIL, "value": 0.2, "ci": [0.18, 0.22]}) if r.id == "evasion-clean-accuracy" else r
                  for r in result.requirements]
    new = result.model_copy(update={"requirements": worse_rows, "finished_at": "2026-12-01T00:00:00+00:00",
                                    "model": result.model.model_copy(update={"sha256": "ab" * 32})})
    rec = compare(result, new, baseline_path="old/results.json")
    rendered = render_html(new.model_copy(update={"recertification": rec}))
    assert 'id="recertification"' in rendered and "1 REGRESSION" in rendered and "Art. 43(4)" in rendered
    assert "old/results.json" in rendered and "WORSENED" in rendered


def test_discrimination_section_has_the_ll144_table_with_intersections_and_marked_groups(result: AuditResult) -> None:
    groups = [
        {"group": g, "count": c, "selection_rate": s, "tpr": None, "fpr": None, "accuracy": None,
         "compared": comp, "unknown": g == "Unknown", "impact_ratio": ir}
        for g, c, s, comp, ir in [("Female × Black", 120, 0.05, True, 0.25), ("Male × White", 2000, 0.2, True, 1.0),
                                  ("Male × Other", 12, 0.1, False, 0.5), ("Unknown", 40, 0.3, False, 1.5)]
    ]
    details = {"attribute": "sex × race", "n": 2172, "min_group_size": 30, "unknown": "exclude", "intersectional": True,
               "by_attribute": {"sex × race": {"groups": groups, "n_unknown": 40, "unknown_excluded": True,
                                               "impact_ratio": 0.25}}}
    rows = [r.model_copy(update={"details": details}) if r.risk == "discrimination" else r for r in result.requirements]
    html = render_html(result.model_copy(update={"requirements": rows}))
    assert "Selection rates and impact ratios by category" in html and "Intersectional (sex × race)" in html
    assert "Female × Black" in html and "0.250" in html
    assert "small group (&lt; 30 records): not compared" in html
    assert "unknown category: not in the impact ratios (§ 5-301(a)(6))" in html
    assert "under 2 % of the data (§ 5-301(c))" in html  # 12 of 2,172 records
    assert "Records in an unknown category (sex × race)" in html


def test_pdf_is_pdf_a_3b_with_results_json_attached(result: AuditResult, tmp_path: Path) -> None:
    from pypdf import PdfReader

    from amulet_audit.report.manifest import pdf_attachment
    from amulet_audit.results import write_results

    write_results(result, tmp_path / "results.json")
    write_report(result, tmp_path)
    assert pdf_attachment(tmp_path / "report.pdf") == (tmp_path / "results.json").read_bytes()
    xmp = PdfReader(tmp_path / "report.pdf").trailer["/Root"]["/Metadata"].get_object().get_data().decode()
    assert re.search(r"pdfaid:part(=\"|>)3", xmp) and re.search(r"pdfaid:conformance(=\"|>)B", xmp)
