"""results.json reading and writing, through the one schema."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from amulet_audit.core.atomic import write_text_atomic
from amulet_audit.core.errors import InputError
from amulet_audit.results.model import SCHEMA_VERSION, AuditResult


def write_results(result: AuditResult, path: str | Path) -> None:
    write_text_atomic(path, result.model_dump_json(indent=2) + "\n")


def read_results(path: str | Path) -> AuditResult:
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; pass the results.json an audit wrote.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg}); pass the results.json an audit wrote.") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not an amulet-audit results file (top level is not an object).")
    version = str(raw.get("schema_version", ""))
    if version.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"{path}: schema_version {version or '(missing)'} is not supported; this amulet-audit reads {SCHEMA_VERSION}."
        )
    try:
        return AuditResult.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{path}: key '{loc}': {err['msg']}; the file is not a valid amulet-audit results file.") from None
