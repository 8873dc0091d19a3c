"""The report layer: AuditResult -> document -> HTML -> PDF, checked without running an audit."""

from __future__ import annotations

import gzip
import io
import json
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
from amulet_audit.core.verdict import ORDER, overall
from amulet_audit.report.format import fmt_number, fmt_params, fmt_seconds
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


GOLDEN = Path(__file__).resolve().parent / "golden"


def golden(version: str = "2.0") -> dict:
    """results.json of a real audit: the demo (`examples/credit`, eu_ai_act, quick profile, seed 0), as written by
    schema `version` (tests/golden/README.md)."""
    return json.loads(gzip.decompress((GOLDEN / f"demo-results-{version}.json.gz").read_bytes()))


def _result_dict() -> dict:
    """The golden demo results, with what that audit did not exercise set on top: a traced-module warning, and a
    requirement whose attack could not run (model inversion without an input range)."""
    raw = golden()
    raw["model"]["warnings"] = [TRACED_WARNING]
    na = next(r for r in raw["requirements"] if r["id"] == "data-reconstruction")
    reason = "Model inversion needs input_range in the data specification; none is given."
    na.update(value=None, ci=None, ci_method="", n=0, verdict="not_applicable", reason=reason)
    run = next(r for r in raw["runs"] if r["id"] == na["run"])
    run.update(details={}, not_applicable=reason)
    return raw


@pytest.fixture(scope="module")
def result() -> AuditResult:
    return AuditResult.model_validate(_result_dict())


def only(result: AuditResult, *run_ids: str) -> AuditResult:
    """`result` with the evidence of these runs only (the other requirements keep their rows): for tests that need
    some charts, not the time to draw all of them."""
    return result.model_copy(update={"runs": [r for r in result.runs if r.id in run_ids]})


@pytest.fixture(scope="module")
def light(result: AuditResult) -> AuditResult:
    """The golden result with the evidence of three runs: evasion (pgd), membership (loss), discrimination."""
    return only(result, "r1", "r2", "r4")


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
    assert html.count("<svg") >= 8
    assert "0.638 [0.594, 0.680]" in html  # evasion-robustness as measured
    assert "≥ 0.60" in html and "≤ 0.10" in html
    assert "Model inversion needs input_range" in html  # reason of the not-applicable row
    assert "straddles the threshold" in html  # reason of the indeterminate row
    assert "traced TorchScript module" in html  # model warning
    assert "Reference models were trained for 10 epochs" in html  # a warning property inference recorded
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
    assert verdicts == sorted(verdicts, key=[v.value for v in ORDER].index)  # fail, indeterminate, n/a, pass
    assert [(r.verdict.key, r.severity) for r in doc.summary.rows[:2]] == [("fail", "high")] * 2  # high severity first


def test_evidence_is_read_once_per_run_from_the_runs_requirements_point_to(doc: Document, result: AuditResult) -> None:
    sections = {s.risk: s for s in doc.sections}
    runs = result.runs_by_id()
    # One evidence block per attack run, listing every requirement that reads it: pgd (3 requirements), apgd (1).
    evasion = sections["evasion"].evidence
    assert [ev.requirement_ids for ev in evasion] == [("declared-accuracy", "evasion-robustness", "evasion-success"),
                                                       ("evasion-robustness-apgd",)]
    assert evasion[0].heading == f"pgd attack ({fmt_params(runs['r1'].params)})"
    extraction = sections["model_extraction"].evidence[0]
    assert [type(b).__name__ for b in extraction.blocks] == ["Chart", "Table", "Table"]
    queries = runs[next(r.run for r in result.requirements if r.id == "extraction-fidelity")].details["queries"]
    assert ("Queries", fmt_number(queries)) in extraction.blocks[-1].rows  # the run's scalars, as recorded
    # a run that could not measure anything has no evidence; its requirement says why
    reconstruction = sections["data_reconstruction"]
    assert reconstruction.evidence == ()
    assert reconstruction.rows[0].value == "—" and reconstruction.verdict.label == "NOT APPLICABLE"
    # the methods table names each requirement's run and interval method
    methods = {row[0]: row for row in doc.methods.table.rows}
    assert methods["membership-privacy"][2] == "r2" and methods["membership-privacy-low-fpr"][2] == "r2"
    assert methods["evasion-robustness"][6] == "exact binomial (Clopper-Pearson)"


def test_section_verdict_follows_the_audit_rule(result: AuditResult) -> None:
    """A section passes only if every requirement in it passes: a not-applicable one makes it indeterminate."""
    def section(reqs, risk):
        bare = only(result).model_copy(update={"requirements": reqs, "interactions": []})  # nothing to draw
        return next(s for s in build_document(bare).sections if s.risk == risk)

    na = {"value": None, "ci": None, "n": 0, "verdict": Verdict.NOT_APPLICABLE, "reason": "not measured"}
    membership = [r for r in result.requirements if r.risk == "membership_inference"]
    assert {r.verdict for r in membership} == {Verdict.PASS}
    assert section(result.requirements, "membership_inference").verdict.label == "PASS"
    one_na = [r.model_copy(update=na) if r.id == "membership-privacy-lira" else r for r in result.requirements]
    assert section(one_na, "membership_inference").verdict.label == "INDETERMINATE"
    assert overall([r.verdict for r in membership[:2]] + [Verdict.NOT_APPLICABLE]) == "indeterminate"
    all_na = [r.model_copy(update=na) if r.risk == "membership_inference" else r for r in result.requirements]
    assert section(all_na, "membership_inference").verdict.label == "NOT APPLICABLE"
    assert section(result.requirements, "discrimination").verdict.label == "FAIL"


def test_report_modules_import_each_other_without_cycles() -> None:
    """Node types (nodes.py) and formatters (format.py) are leaves; only the writer (templating.py) imports the
    assembler (document.py); every report module imports first, in a fresh interpreter, in any order."""
    import ast

    root = Path(__file__).resolve().parents[1] / "amulet_audit" / "report"
    graph = {}
    for path in root.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("amulet_audit.report"):
                found |= {node.module} if node.module != "amulet_audit.report" else {
                    f"amulet_audit.report.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("amulet_audit.report.")}
        graph[path.stem] = {m.rsplit(".", 1)[1] for m in found} - {path.stem}
    assert {m for m, deps in graph.items() if "document" in deps} == {"templating"}
    assert graph["nodes"] == set() and graph["format"] == {"nodes"}
    state: dict[str, int] = {}

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert state.get(module) != 1, f"import cycle: {' -> '.join(path + (module,))}"
        if state.get(module) != 2 and module in graph:
            state[module] = 1
            for dep in sorted(graph[module]):
                visit(dep, path + (module,))
            state[module] = 2

    for module in sorted(graph):
        visit(module, ())
    modules = sorted(m for m in graph if m != "__init__")
    code = ("import importlib, sys\n"
            f"for name in {modules!r} + {modules[::-1]!r}:\n"
            "    for m in [m for m in sys.modules if m.startswith('amulet_audit.report')]:\n"
            "        del sys.modules[m]\n"
            "    importlib.import_module('amulet_audit.report.' + name)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root.parents[1])
    assert done.returncode == 0, done.stderr


def test_malformed_details_do_not_break_the_report(result: AuditResult) -> None:
    broken = result.model_copy(deep=True)
    runs = broken.runs_by_id()
    runs["r1"].details = {"curve": [{"eps": "big"}], "eps": "x"}
    runs["r4"].details = {"by_attribute": {"sex": {"groups": "oops"}}}
    runs["r2"].details = {"roc": {"fpr": "x"}, "most_exposed": [{"split": "train"}]}
    html = render_html(broken)
    assert "evasion-robustness" in html and "bias-impact-ratio" in html and "membership-privacy" in html
    assert "could not be charted" in html


def test_titles_are_escaped(light: AuditResult) -> None:
    hostile = light.model_copy(deep=True)
    hostile.requirements[0].title = "<script>alert(1)</script>"
    hostile.model.warnings = ['<img src=x onerror="alert(2)">']
    html = render_html(hostile)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x" not in html


# --- organisation templates -------------------------------------------------------------------------


def test_user_template_overrides_one_block(tmp_path: Path, light: AuditResult) -> None:
    result = light
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


def test_user_partial_replaces_packaged_one(tmp_path: Path, light: AuditResult) -> None:
    result = light
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
    light: AuditResult, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    result = light
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
    assert words_off_the_page(pdf) == [], "text runs past the page's right edge (a table wider than the page)"


def words_off_the_page(pdf: Path) -> list[tuple[int, str]]:
    """(page, word) for every word of `pdf` whose box reaches past its page's right edge, as `pdftotext -bbox`
    places them: what a reader of the printed report would find cut off."""
    import re

    out = subprocess.run(["pdftotext", "-bbox", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    bad = []
    for k, (width, body) in enumerate(re.findall(r'<page width="([\d.]+)" height="[\d.]+">(.*?)</page>', out, re.S)):
        for x_max, word in re.findall(r'<word xMin="[\d.]+" yMin="[\d.]+" xMax="([\d.]+)" yMax="[\d.]+">(.*?)</word>', body):
            if float(x_max) > float(width) - 1:
                bad.append((k + 1, word))
    return bad


def test_render_pdf_refuses_network_resources(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    html = '<html><body><p>x</p><img src="http://example.invalid/logo.png"></body></html>'
    with caplog.at_level(logging.WARNING, logger="weasyprint"):
        path = render_pdf(html, tmp_path / "offline.pdf")
    assert path.read_bytes().startswith(b"%PDF")
    assert any("disallowed protocol" in r.getMessage() for r in caplog.records)


def test_write_report_without_pdf(light: AuditResult, tmp_path: Path) -> None:
    written = write_report(light, tmp_path, pdf=False)
    assert written == [tmp_path / "report.html"] and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_value_formatting() -> None:
    from amulet_audit.report.format import fmt_threshold, fmt_value_ci
    from amulet_audit.results.model import Threshold

    assert fmt_value_ci(0.8234, [0.805, 0.8401]) == "0.823 [0.805, 0.840]"
    assert fmt_value_ci(None, None) == "—"
    assert fmt_threshold(Threshold(op=">=", value=0.6)) == "≥ 0.60"
    assert fmt_threshold(Threshold(op="<=", value=0.001)) == "≤ 0.001"
    assert fmt_number(0.00045) == "0.00045" and fmt_number(0.00002) == "2.0e-05" and fmt_number(2000) == "2,000" and fmt_number(math.inf) == "inf"


def test_minimal_result_with_unknown_risks_renders() -> None:
    raw = _result_dict()
    raw.update(verdict="indeterminate", interactions=[], defenses=[], environment={}, timings={}, started_at="?")
    raw["model"]["warnings"] = []
    raw["data"]["files"] = {}
    base = raw["requirements"][0]
    raw["requirements"] = [
        {**base, "id": "new-risk", "risk": "watermark_removal", "attack": "finetune", "metric": "watermark_kept",
         "verdict": "indeterminate", "run": "r1"},
        {**base, "id": "nothing-recorded", "risk": "poisoning", "attack": "label_flip", "metric": "accuracy_drop",
         "value": None, "ci": None, "n": 0, "verdict": "not_applicable", "reason": "No training recipe.", "run": "r2"},
    ]
    raw["runs"] = [
        {"id": "r1", "attack": "finetune", "details": {"nested": {"a": [1, 2]}, "ratio": 0.5, "ok": True}},
        {"id": "r2", "attack": "label_flip", "not_applicable": "No training recipe."},
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
    # one row per run on the audited model, by its id in results.json, with the requirements it measured and its time
    rows = {row[0]: row for row in doc.test_log.table.rows}
    audited = [r for r in result.runs if r.defense is None]
    assert list(rows) == [r.id for r in audited]
    assert rows["r2"][3] == "membership-privacy: pass, membership-privacy-low-fpr: pass"
    assert rows["r3"][4] == fmt_seconds(result.runs_by_id()["r3"].seconds)


def test_cover_states_regulation_status_and_recertification(result: AuditResult) -> None:
    from amulet_audit.report.compliance import regulation_status

    result = only(result)
    facts = {f.label: f.value for f in build_document(result).cover.facts}
    assert facts["Regulation status"] == "in force since 2 August 2026"  # the audit finished in November 2026
    early = result.model_copy(update={"finished_at": "2026-01-05T00:00:00+00:00"})
    assert regulation_status(early.policy.regulation, early.finished_at) == "in force; applies from 2 August 2026 (after this audit)"
    assert regulation_status({"status": "in-force", "effective": "2018-05-25"}, "2026-01-01T00:00:00+00:00") == "in force since 25 May 2018"
    assert "voluntary" in regulation_status({"status": "guidance", "effective": "2023-01-26"}, "2026-01-01T00:00:00+00:00")
    assert facts["Recertification"] == "every 365 days; this audit must be repeated by 30 November 2027"
    no_period = result.model_copy(update={"policy": result.policy.model_copy(update={"recertification_days": None})})
    facts = {f.label: f.value for f in build_document(no_period).cover.facts}
    assert facts["Recertification"] == "the policy sets no recertification period"


def test_recertification_section_renders_only_with_a_baseline(light: AuditResult, html: str) -> None:
    from amulet_audit.results.diff import compare

    result = light
    assert 'id="recertification"' not in html
    worse_rows = [r.model_copy(update={"verdict": Verdict.FAIL, "value": 0.2, "ci": [0.18, 0.22]}) if r.id == "declared-accuracy" else r
                  for r in result.requirements]
    new = result.model_copy(update={"requirements": worse_rows, "finished_at": "2026-12-01T00:00:00+00:00",
                                    "model": result.model.model_copy(update={"sha256": "ab" * 32})})
    rec = compare(result, new, baseline_path="old/results.json")
    rendered = render_html(new.model_copy(update={"recertification": rec}))
    assert 'id="recertification"' in rendered and "1 REGRESSION" in rendered and "Art. 43(4)" in rendered
    assert "old/results.json" in rendered and "WORSENED" in rendered


def test_discrimination_section_has_the_ll144_table_with_intersections_and_marked_groups(result: AuditResult) -> None:
    """The demo audit compares single attributes; an intersectional run (as nyc_ll144 records it) is set here."""
    groups = [
        {"group": g, "count": c, "selection_rate": s, "tpr": None, "fpr": None, "accuracy": None,
         "compared": comp, "unknown": g == "Unknown", "impact_ratio": ir}
        for g, c, s, comp, ir in [("Female × Black", 120, 0.05, True, 0.25), ("Male × White", 2000, 0.2, True, 1.0),
                                  ("Male × Other", 12, 0.1, False, 0.5), ("Unknown", 40, 0.3, False, 1.5)]
    ]
    details = {"attribute": "sex × race", "n": 2172, "min_group_size": 30, "unknown": "exclude", "intersectional": True,
               "by_attribute": {"sex × race": {"groups": groups, "n_unknown": 40, "unknown_excluded": True,
                                               "impact_ratio": 0.25}}}
    fairness = result.runs_by_id()["r4"]
    assert fairness.attack == "group_fairness"
    html = render_html(result.model_copy(update={"runs": [fairness.model_copy(update={"details": details})]}))
    assert "Selection rates and impact ratios by category" in html and "Intersectional (sex × race)" in html
    assert "Female × Black" in html and "0.250" in html
    assert "small group (&lt; 30 records): not compared" in html
    assert "unknown category: not in the impact ratios (§ 5-301(a)(6))" in html
    assert "under 2 % of the data (§ 5-301(c))" in html  # 12 of 2,172 records
    assert "Records in an unknown category (sex × race)" in html


def test_pdf_is_pdf_a_3b_with_results_json_attached(result: AuditResult, tmp_path: Path) -> None:
    result = only(result).model_copy(update={"interactions": []})  # the attachment and metadata, not the content
    from pypdf import PdfReader

    from amulet_audit.report.manifest import pdf_attachment
    from amulet_audit.results import write_results

    write_results(result, tmp_path / "results.json")
    write_report(result, tmp_path)
    assert pdf_attachment(tmp_path / "report.pdf") == (tmp_path / "results.json").read_bytes()
    xmp = PdfReader(tmp_path / "report.pdf").trailer["/Root"]["/Metadata"].get_object().get_data().decode()
    assert re.search(r"pdfaid:part(=\"|>)3", xmp) and re.search(r"pdfaid:conformance(=\"|>)B", xmp)
