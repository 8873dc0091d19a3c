"""The report: AuditResult -> document tree -> HTML (Jinja2) -> PDF (WeasyPrint), with charts.

WeasyPrint and matplotlib are imported only when a PDF or a chart is made.
"""

from amulet_audit.report.pdf import render_pdf
from amulet_audit.report.templating import render_html
from amulet_audit.report.write import write_report

__all__ = ["render_html", "render_pdf", "write_report"]
