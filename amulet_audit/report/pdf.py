"""HTML -> PDF through WeasyPrint, offline."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from amulet_audit.core.atomic import write_bytes_atomic

_LOCAL_PROTOCOLS = ("data", "file")


def _offline_fetcher() -> Any:
    """A WeasyPrint URL fetcher for embedded (`data:`) and local (`file:`) resources only:
    a report is never allowed to go online, whatever a user template links to."""
    import weasyprint

    fetcher_class = getattr(weasyprint, "URLFetcher", None)
    if fetcher_class is not None:
        return fetcher_class(allowed_protocols=_LOCAL_PROTOCOLS)
    default = weasyprint.default_url_fetcher  # older WeasyPrint: fetchers are plain functions

    def fetch(url: str, *args: Any, **kwargs: Any) -> Any:
        if url.split(":", 1)[0].lower() not in _LOCAL_PROTOCOLS:
            raise ValueError(f"URI uses disallowed protocol: {url}")
        return default(url, *args, **kwargs)

    return fetch


def render_pdf(
    html: str,
    out_path: str | os.PathLike[str],
    *,
    attachments: Sequence[tuple[str, bytes, str]] = (),
    created: datetime | None = None,
    pdf_variant: str | None = "pdf/a-3b",
) -> Path:
    """Print `html` to an A4 PDF at `out_path`, written atomically; returns the path.

    The PDF is PDF/A-3b (ISO 19005-3, archival with embedded files) unless `pdf_variant` says otherwise.
    `attachments` are (file name, content, description) embedded as PDF file attachments (associated files
    with relationship "Data"), e.g. the results.json the report was rendered from; `created` dates them.
    """
    from weasyprint import HTML, Attachment

    files = [
        Attachment(string=content, name=name, description=description, relationship="Data",
                   created=created, modified=created)
        for name, content, description in attachments
    ]
    options: dict[str, Any] = {"attachments": files} if files else {}
    if pdf_variant:
        options["pdf_variant"] = pdf_variant
    pdf = HTML(string=html, url_fetcher=_offline_fetcher()).write_pdf(**options)
    path = Path(out_path)
    write_bytes_atomic(path, pdf)
    return path
