"""Write a report folder's HTML and PDF."""

from __future__ import annotations

import os
from pathlib import Path

from amulet_audit.atomic import write_text_atomic
from amulet_audit.report.pdf import render_pdf
from amulet_audit.report.templating import render_html
from amulet_audit.results.model import AuditResult

HTML_NAME = "report.html"
PDF_NAME = "report.pdf"


def write_report(
    result: AuditResult,
    out_dir: str | os.PathLike[str],
    *,
    templates_dir: str | os.PathLike[str] | None = None,
    pdf: bool = True,
) -> list[Path]:
    """Write `report.html` (and `report.pdf` unless `pdf` is False) into `out_dir`, each atomically.

    Returns the paths written, HTML first.
    """
    out = Path(out_dir)
    html = render_html(result, templates_dir)
    html_path = out / HTML_NAME
    write_text_atomic(html_path, html)
    written = [html_path]
    if pdf:
        written.append(render_pdf(html, out / PDF_NAME))
    return written
