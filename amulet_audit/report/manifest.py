"""The report folder's manifest (`manifest.json`) and its check (`amulet-audit verify DIR`).

The manifest records the SHA-256 of results.json, report.html and report.pdf as written, and is written last,
after every file it lists is in place (results.json cannot hold its own digest). `verify` recomputes the
digests and also checks that the results.json embedded in report.pdf is byte-for-byte the results.json beside
it. This detects a file changed after the audit; it does not prove who wrote the folder: anyone able to edit
the files can also rewrite the manifest, so keep a copy of manifest.json (or its digest) where the report is
filed or signed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from amulet_audit import __version__
from amulet_audit.core.atomic import write_text_atomic
from amulet_audit.core.digest import sha256_file
from amulet_audit.core.errors import InputError

MANIFEST_NAME = "manifest.json"
RECORDED = ("results.json", "report.html", "report.pdf")
ATTACHMENT_NAME = "results.json"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest_dict(folder: str | Path) -> dict:
    """The manifest of the report files present in `folder` (SHA-256 hex digests)."""
    folder = Path(folder)
    files = {name: sha256_file(folder / name) for name in RECORDED if (folder / name).is_file()}
    return {
        "tool": f"amulet-audit {__version__}",
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "algorithm": "sha256",
        "files": files,
    }


def write_manifest(folder: str | Path) -> Path:
    """Write `folder/manifest.json` over the report files present there; returns its path."""
    path = Path(folder) / MANIFEST_NAME
    write_text_atomic(path, json.dumps(manifest_dict(folder), indent=2) + "\n")
    return path


def pdf_attachment(pdf_path: str | Path, name: str = ATTACHMENT_NAME) -> bytes | None:
    """The bytes of the file attachment `name` embedded in a PDF, or None when it has none."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(Path(pdf_path).read_bytes()))
    found = reader.attachments.get(name)
    return found[0] if found else None


@dataclass
class Verification:
    """The outcome of `verify_folder`: `intact` is False when any check failed."""

    folder: Path
    checked: list[tuple[str, str]] = field(default_factory=list)  # (what, "ok" | a problem)

    @property
    def problems(self) -> list[str]:
        return [f"{what}: {status}" for what, status in self.checked if status != "ok" and not status.startswith("not checked")]

    @property
    def intact(self) -> bool:
        return not self.problems


def verify_folder(folder: str | Path) -> Verification:
    """Recompute the digests `folder/manifest.json` records and compare the PDF's embedded results.json with
    the results.json on disk. Raises InputError when the folder or its manifest cannot be read."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder; pass the report folder an audit wrote (with {MANIFEST_NAME}).")
    mpath = folder / MANIFEST_NAME
    if not mpath.is_file():
        raise InputError(f"{folder}: no {MANIFEST_NAME}; the audit and `render` commands write one beside the reports they write.")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
        files = manifest["files"]
        if manifest.get("algorithm", "sha256") != "sha256" or not isinstance(files, dict):
            raise ValueError("unexpected layout")
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{mpath}: not a valid amulet-audit manifest ({exc}); it cannot be used to verify the folder.") from None
    out = Verification(folder)
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            out.checked.append((name, "missing"))
        elif sha256_file(path) != digest:
            out.checked.append((name, "altered (SHA-256 differs from the manifest)"))
        else:
            out.checked.append((name, "ok"))
    for name in RECORDED:
        if name not in files and (folder / name).is_file():
            out.checked.append((name, "not recorded in the manifest (added after the audit)"))
    pdf, results = folder / "report.pdf", folder / "results.json"
    if pdf.is_file() and results.is_file():
        try:
            embedded = pdf_attachment(pdf)
        except ImportError:
            out.checked.append(("report.pdf attachment", "not checked: reading PDF attachments needs pypdf (pip install pypdf)"))
            return out
        except Exception as exc:  # a damaged PDF is an altered one
            out.checked.append(("report.pdf attachment", f"unreadable PDF ({type(exc).__name__})"))
        else:
            if embedded is None:
                out.checked.append(("report.pdf attachment", "the PDF embeds no results.json"))
            elif embedded != results.read_bytes():
                out.checked.append(("report.pdf attachment", "the results.json embedded in the PDF differs from results.json"))
            else:
                out.checked.append(("report.pdf attachment", "ok"))
    return out
