"""Names in any script, very long or hostile, in the report: every name and number is on the PDF page (read back
with pdftotext), no glyph prints as a box, a character no installed font has is a warning in the results and one
line on the console, and hostile names stay escaped. Rendered from a small results file, without an audit."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import pytest

from amulet_audit.cli import main
from amulet_audit.report import charts, fonts
from amulet_audit.report.document import fmt_number
from amulet_audit.results import read_results

LONG = "REGION-" + "".join(f"{i:02d}X" for i in range(51))  # 160 characters, no break opportunity
HOSTILE = "<script>alert('x')</script>&amp;"
SEX = {"女性": (378, 0.444, 0.832, 0.137, 0.849, 0.83), "男性": (422, 0.536, 0.841, 0.184, 0.829, 1.0)}
REGION = {
    HOSTILE: (223, 0.538, 0.839, 0.234, 0.803, 1.0),
    LONG: (188, 0.4734, 0.8438, 0.0870, 0.8777, 0.8797),
    "דרום": (185, 0.4649, 0.8588, 0.13, 0.8649, 0.8639),
    "الشمال": (204, 0.4853, 0.81, 0.1731, 0.8186, 0.9018),
}
TITLE = "Fairness \u202eevitcerid\u202c <b>bold</b></style><script>alert(1)</script> — 公平性审计"
# Characters of scripts that Debian's DejaVu and Noto CJK fonts lack: one of them serves as "no font has it".
RARE = ("\U00010c80", "\U0001e900", "\U00011400", "\U00016a40", "\U0001e800")


def _groups(table: dict) -> list[dict]:
    keys = ("count", "selection_rate", "tpr", "fpr", "accuracy", "impact_ratio")
    return [{"group": name, **dict(zip(keys, values)), "compared": True, "unknown": False}
            for name, values in table.items()]


def _results(*, region: dict = REGION, title: str = TITLE) -> dict:
    """A schema 1.1 results.json as an audit of case-12-like data writes it (one discrimination run)."""
    details = {
        "attribute": "性别",
        "by_attribute": {
            "性别": {"groups": _groups(SEX), "n_unknown": 0, "unknown_excluded": False,
                   "demographic_parity_difference": 0.0911, "impact_ratio": 0.8299},
            "region": {"groups": _groups(region), "n_unknown": 0, "unknown_excluded": False,
                       "demographic_parity_difference": 0.0733, "impact_ratio": 0.8639},
        },
        "positive_label": "1", "n": 800, "min_group_size": 30,
    }
    requirement = {
        "id": "impact", "title": "Four-fifths rule — قاعدة الأربعة أخماس", "risk": "discrimination",
        "attack": "group_fairness", "metric": "impact_ratio", "value": 0.83, "ci": [0.703, 0.956], "n": 800,
        "threshold": {"op": ">=", "value": 0.8}, "verdict": "indeterminate", "details": details,
        "reason": "the confidence interval straddles the threshold",
    }
    return {
        "schema_version": "1.1", "tool": {"name": "amulet-audit", "version": "0.1.0"}, "verdict": "indeterminate",
        "model": {"path": "model.pt", "sha256": "ab" * 32, "format": "torchscript", "parameters": 114},
        "data": {"path": "model.data.yaml", "sha256": "cd" * 32, "name": "unicode-groups", "n_train": 800,
                 "n_holdout": 800, "sensitive": ["性别", "region"]},
        "policy": {"id": "case-12", "sha256": "ef" * 32, "title": title},
        "requirements": [requirement], "seed": 0, "profile": "quick",
        "started_at": "2026-01-05T10:00:00+00:00", "finished_at": "2026-01-05T10:01:00+00:00",
    }


def _render(tmp: Path, raw: dict, capsys: pytest.CaptureFixture[str], *, pdf: bool = True) -> tuple[Path, str]:
    src = tmp / "results.json"
    src.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    out = tmp / "out"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code = main(["render", str(src), "--out", str(out), *([] if pdf else ["--no-pdf"])])
    assert code == 0
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    return out, capsys.readouterr().err


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    """The report of `_results()` rendered to PDF: (folder, pdftotext -layout text, text in reading order,
    stderr)."""
    if shutil.which("pdftotext") is None:
        pytest.fail("pdftotext is missing: `make` installs poppler-utils")
    tmp = tmp_path_factory.mktemp("scripts")
    src = tmp / "results.json"
    src.write_text(json.dumps(_results(), ensure_ascii=False), encoding="utf-8")
    out = tmp / "out"
    import contextlib

    err = io.StringIO()
    with contextlib.redirect_stderr(err), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["render", str(src), "--out", str(out)]) == 0
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    text, flow = (subprocess.run(["pdftotext", *mode, str(out / "report.pdf"), "-"], capture_output=True, text=True,
                                 check=True).stdout for mode in (["-layout"], []))
    return out, text, flow, err.getvalue()


def _row(text: str, name: str) -> str:
    """The pdftotext line where the table row of `name` starts (a long name wraps; its first line holds the row)."""
    start = name[:12]
    lines = [line for line in text.splitlines() if start in line and re.search(r"\d\.\d{3}", line)]
    assert lines, f"no table row for {name!r} in the PDF text"
    return lines[0]


def test_every_group_name_and_number_is_on_the_page(rendered: tuple[Path, str, str, str]) -> None:
    _, text, flow, _ = rendered
    squeezed = re.sub(r"\s", "", flow)  # a long name wraps inside its cell
    for groups in (SEX, REGION):
        for name, (count, rate, tpr, fpr, accuracy, ratio) in groups.items():
            assert name in squeezed, f"group {name!r} is not in the PDF text"
            row = _row(text, name)  # per-group table: count, selection rate, TPR, FPR, accuracy, in order
            numbers = [fmt_number(v) for v in (count, rate, tpr, fpr, accuracy)]
            assert re.search(r"\s+".join(map(re.escape, numbers)), row), (name, numbers, row)
            bias_audit = [line for line in text.splitlines() if name[:12] in line and fmt_number(ratio) in line]
            assert any(re.search(rf"{count}\s+{re.escape(fmt_number(rate))}\s+{re.escape(fmt_number(ratio))}", line)
                       for line in bias_audit), f"6 RCNY § 5-301 row of {name!r} lacks its numbers"
    assert "Per-group counts and rates (性别)" in text
    assert "Fairness" in text and "公平性审计" in text


def test_no_glyph_prints_as_a_box(rendered: tuple[Path, str, str, str]) -> None:
    out, text, _, err = rendered
    assert "□" not in text and "\ufffd" not in text
    assert _boxes(out / "report.pdf") == []
    assert "Glyph" not in err and "missing from font" not in err and "No installed font" not in err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "LastResort" not in html, "a chart drew a character with matplotlib's last-resort (box) font"
    assert "NotoSansCJK" in html, "the charts' CJK names are not drawn with the CJK font"


def test_hostile_names_stay_escaped(rendered: tuple[Path, str, str, str]) -> None:
    out, text, _, err = rendered
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<script>" not in html and "</style><script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;amp;" in html
    assert HOSTILE in text  # and shown as the text it is
    assert "right-to-left override (U+202E)" in err and "\u202e" not in err  # the override is named, not applied


def test_a_character_no_font_has_is_a_warning_in_the_results_and_one_console_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fontset = fonts.installed_fonts()
    assert fontset is not None, "fc-list is missing: `make` installs fontconfig"
    rare = next((c for c in RARE if fonts.missing_characters(c, fontset)), None)
    if rare is None:
        pytest.skip("every candidate character has an installed font")
    name = f"group {rare}{rare}"
    raw = _results(region={name: (300, 0.5, 0.8, 0.2, 0.8, 1.0), "other": (500, 0.45, 0.7, 0.1, 0.7, 0.9)},
                   title="Plain title")
    out, err = _render(tmp_path, raw, capsys, pdf=False)
    lines = [line for line in err.splitlines() if line.startswith("amulet-audit: warning:")]
    assert len(lines) == 1 and f"U+{ord(rare):04X}" in lines[0] and "Glyph" not in err
    html = (out / "report.html").read_text(encoding="utf-8")
    assert f"U+{ord(rare):04X}" in html  # on the cover's warnings

    # An audit records it in results.json, written with the report.
    from amulet_audit.cli import _write_outputs

    result = read_results(tmp_path / "results.json")
    warned = _write_outputs(result, tmp_path / "audit", templates=None, pdf=False)
    assert warned == [lines[0].removeprefix("amulet-audit: warning: ")]
    assert read_results(tmp_path / "audit" / "results.json").report_warnings == warned


def test_the_box_check_finds_a_character_no_font_has(tmp_path: Path) -> None:
    from amulet_audit.report import render_pdf

    fontset = fonts.installed_fonts() or ()
    rare = next((c for c in RARE if fonts.missing_characters(c, fontset)), None)
    if rare is None:
        pytest.skip("every candidate character has an installed font")
    assert _boxes(render_pdf(f"<p>ab {rare} 女性</p>", tmp_path / "box.pdf", pdf_variant=None))
    assert _boxes(render_pdf("<p>ab 女性 דרום الشمال</p>", tmp_path / "fine.pdf", pdf_variant=None)) == []


def test_console_summary_prints_markup_in_names_as_text(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from amulet_audit.cli import _summary

    monkeypatch.setenv("COLUMNS", "500")  # the output folder's line is not wrapped, however long the temporary path

    raw = _results(title="Fairness [/] [bold red]policy[/bold red]")
    raw["requirements"][0]["id"] = "impact-[/]"
    src = tmp_path / "results.json"
    src.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    _summary(read_results(src), tmp_path / "out [x]")
    err = capsys.readouterr().err
    assert "Fairness [/] [bold red]policy[/bold red]" in err and "impact-[/]" in err and "out [x]/" in err


def test_warnings_name_characters_once_and_never_echo_control_characters() -> None:
    assert fonts.needs_glyph("女") and not fonts.needs_glyph("\u202e") and not fonts.needs_glyph("\ufe0f")
    assert fonts.visible("a\x1b[2Jb\u202e") == "a\\u001b[2Jb\\u202e"
    assert len(fonts.visible("x" * 500)) < 45


def test_chart_labels_wrap_and_shorten_with_their_ends_kept() -> None:
    label = charts.fit_label(LONG, 16, 3)
    lines = label.split("\n")
    assert len(lines) <= 3 and all(len(line) <= 16 for line in lines)
    assert "…" in label and label.startswith("REGION-00X") and label.endswith("50X")
    assert charts.fit_label("女性" * 10, 8, 1).count("女") <= 2  # East Asian wide characters count double
    assert charts.fit_label("two words", 16, 3) == "two words"
    names, shortened = charts.fit_labels([LONG, LONG[:-1] + "Y", "short"], 16, 3)
    assert shortened and len(set(names)) == 3 and names[2] == "short"


def test_chart_with_names_in_every_script_uses_fonts_that_have_them() -> None:
    groups = [{"group": g, "selection_rate": v[1], "tpr": v[2], "fpr": v[3]} for g, v in {**SEX, **REGION}.items()]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        svg = str(charts.group_rates(groups, attribute="性别"))
    assert [str(w.message) for w in caught if "Glyph" in str(w.message)] == []
    assert "LastResort" not in svg and "NotoSansCJK" in svg


def _boxes(pdf: Path) -> list[tuple[int, str, int]]:
    """(page, font, glyph) of every glyph shown that its embedded font lacks: glyph 0 (.notdef) or one past the
    font's last glyph, which is how WeasyPrint writes a character that no installed font has (a box)."""
    from fontTools.ttLib import TTFont
    from pypdf import PdfReader
    from pypdf.generic import ContentStream

    reader = PdfReader(pdf)
    glyphs: dict[int, int] = {}
    found = []
    for number, page in enumerate(reader.pages, 1):
        resources = page["/Resources"].get("/Font", {})
        font = None
        for operands, op in ContentStream(page.get_contents(), reader).operations:
            if op == b"Tf":
                font = resources[operands[0]].get_object()
            elif op in (b"Tj", b"TJ") and font is not None and font.get("/Subtype") == "/Type0":
                if id(font) not in glyphs:
                    descriptor = font["/DescendantFonts"][0].get_object()["/FontDescriptor"].get_object()
                    program = (descriptor.get("/FontFile2") or descriptor.get("/FontFile3")).get_object().get_data()
                    glyphs[id(font)] = TTFont(io.BytesIO(program))["maxp"].numGlyphs
                for item in operands[0] if op == b"TJ" else operands:
                    raw = getattr(item, "original_bytes", item)
                    if not isinstance(raw, bytes):
                        continue
                    for i in range(0, len(raw) - 1, 2):
                        code = int.from_bytes(raw[i:i + 2], "big")
                        if code == 0 or code >= glyphs[id(font)]:
                            found.append((number, str(font["/BaseFont"]), code))
    return found


def test_every_character_no_font_has_is_named_emoji_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fonts that draw ASCII, Hebrew, Arabic and CJK only (fc-list's charset text, astral ranges included): ten
    # Devanagari letters sort before the emoji, and the warning must still name the emoji and every letter.
    ranges = dict(fonts._ranges("20-7e 5d0-5ea 600-6ff 4e00-9fff 1f300-1f3ff zz"))
    assert ranges[0x1F300] == 0x1F3FF and 0x1F680 not in ranges
    font = fonts.Font("Test Sans", "Regular", "test.ttf", 0, tuple(sorted(ranges)), tuple(ranges[a] for a in sorted(ranges)))
    assert font.has("\U0001F3A8") and not font.has("\U0001F680")
    monkeypatch.setattr(fonts, "installed_fonts", lambda: (font,))
    region = {"उत्तर": (300, 0.5, 0.8, 0.2, 0.8, 1.0), "दक्षिण": (300, 0.5, 0.8, 0.2, 0.8, 1.0),
              "क्षेत्र": (300, 0.5, 0.8, 0.2, 0.8, 1.0), "group🚀": (200, 0.45, 0.7, 0.1, 0.7, 0.9)}
    src = tmp_path / "results.json"
    src.write_text(json.dumps(_results(region=region, title="Plain"), ensure_ascii=False), encoding="utf-8")
    [warning] = fonts.glyph_warnings(read_results(src))
    missing = set("उत्तरदक्षिणक्षेत्र") | {"🚀"}
    assert "U+1F680" in warning and "group🚀" in warning and "fonts-noto-color-emoji" in warning
    assert all(c in warning for c in missing), [c for c in missing if c not in warning]
