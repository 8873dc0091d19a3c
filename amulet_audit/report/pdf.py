"""HTML -> PDF through WeasyPrint, offline."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from amulet_audit.atomic import write_bytes_atomic

_LOCAL_SCHEMES = ("data:", "file:")


def _offline_fetcher(url: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Fetch embedded (`data:`) and local (`file:`) resources only; a report never goes online."""
    from weasyprint import default_url_fetcher

    if not url.startswith(_LOCAL_SCHEMES):
        raise ValueError(f"refused to fetch {url}: reports are rendered offline; embed it as a data: URL")
    return default_url_fetcher(url, *args, **kwargs)


def render_pdf(html: str, out_path: str | os.PathLike[str]) -> Path:
    """Print `html` to an A4 PDF at `out_path`, written atomically; returns the path."""
    from weasyprint import HTML

    pdf = HTML(string=html, url_fetcher=_offline_fetcher).write_pdf()
    path = Path(out_path)
    write_bytes_atomic(path, pdf)
    return path
