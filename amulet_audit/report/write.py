"""Write a report folder's HTML and PDF."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from amulet_audit.core.atomic import write_text_atomic
from amulet_audit.report.pdf import render_pdf
from amulet_audit.report.templating import render_html
from amulet_audit.results.model import AuditResult

HTML_NAME = "report.html"
PDF_NAME = "report.pdf"
RESULTS_NAME = "results.json"


def results_json_bytes(result: AuditResult) -> bytes:
    """results.json exactly as `amulet_audit.results.write_results` writes it (UTF-8)."""
    return (result.model_dump_json(indent=2) + "\n").encode("utf-8")


def write_report(
    result: AuditResult,
    out_dir: str | os.PathLike[str],
    *,
    templates_dir: str | os.PathLike[str] | None = None,
    pdf: bool = True,
    results_bytes: bytes | None = None,
) -> list[Path]:
    """Write `report.html` (and `report.pdf` unless `pdf` is False) into `out_dir`, each atomically.

    The PDF is PDF/A-3b and embeds results.json as a file attachment: `results_bytes` when given, else
    `out_dir/results.json` when it exists, else `result` serialised as results.json is. Returns the paths
    written, HTML first.
    """
    out = Path(out_dir)
    html = render_html(result, templates_dir)
    html_path = out / HTML_NAME
    write_text_atomic(html_path, html)
    written = [html_path]
    if pdf:
        if results_bytes is None:
            beside = out / RESULTS_NAME
            results_bytes = beside.read_bytes() if beside.is_file() else results_json_bytes(result)
        written.append(render_pdf(
            html, out / PDF_NAME,
            attachments=[(RESULTS_NAME, results_bytes, "amulet-audit results (results.json) this report was rendered from")],
            created=_moment(result.finished_at),
        ))
    return written


def _moment(iso: str) -> datetime | None:
    try:
        return datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return None
