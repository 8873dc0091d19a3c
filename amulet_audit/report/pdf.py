"""HTML -> PDF through WeasyPrint, offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from amulet_audit.atomic import write_bytes_atomic

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


def render_pdf(html: str, out_path: str | os.PathLike[str]) -> Path:
    """Print `html` to an A4 PDF at `out_path`, written atomically; returns the path."""
    from weasyprint import HTML

    pdf = HTML(string=html, url_fetcher=_offline_fetcher()).write_pdf()
    path = Path(out_path)
    write_bytes_atomic(path, pdf)
    return path
