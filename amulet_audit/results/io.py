"""results.json reading and writing, through the one schema; files of schema 1.x are converted on read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from amulet_audit.core.atomic import write_text_atomic
from amulet_audit.core.errors import InputError
from amulet_audit.results.model import SCHEMA_VERSION, AuditResult


def write_results(result: AuditResult, path: str | Path) -> None:
    write_text_atomic(path, result.model_dump_json(indent=2) + "\n")


def read_results(path: str | Path) -> AuditResult:
    """An AuditResult from a results.json of this schema or of schema 1.x (1.0, 1.1), which is converted.
    InputError (one sentence naming the file and the key) for anything else."""
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
    major = version.split(".")[0]
    if major == "1":
        try:
            raw = upgrade_1x(raw)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{path}: schema_version {version} file could not be converted ({type(exc).__name__}: {exc}); "
                             "the file is not a valid amulet-audit results file.") from None
    elif major != SCHEMA_VERSION.split(".")[0]:
        raise InputError(
            f"{path}: schema_version {version or '(missing)'} is not supported; this amulet-audit reads "
            f"{SCHEMA_VERSION} and converts 1.x."
        )
    try:
        return AuditResult.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise InputError(f"{path}: key '{loc}': {err['msg']}; the file is not a valid amulet-audit results file.") from None


# --- schema 1.x -> 2.0 -----------------------------------------------------------------------------
#
# 1.x copied an attack run's configuration and evidence (`params`, `details`) into every requirement that read it,
# and again into each defense's rows; its durations were keyed by strings: "attack:<name>:<policy params JSON>",
# "<defense>: attack:<name>:<...>" and "defense:<name>". Requirements of one run share attack, params and details.


def upgrade_1x(raw: dict[str, Any]) -> dict[str, Any]:
    """A schema 1.x results dict as schema 2.0: the runs collected from the requirements (one per distinct attack,
    params and details; durations matched from the 1.x timings where they can be), requirements pointing to them,
    each metric's direction read from the threshold (as 1.x `diff` did; its unit was not recorded)."""
    out = dict(raw)
    timings: dict[str, float] = dict(raw.get("timings") or {})
    plugins = (raw.get("environment") or {}).get("plugins") or {}
    runs: list[dict[str, Any]] = []
    out["requirements"] = _upgrade_rows(raw.get("requirements") or [], None, runs, timings, plugins)
    defenses = []
    for d in raw.get("defenses") or []:
        d = dict(d)
        d["requirements"] = _upgrade_rows(d.get("requirements") or [], d["name"], runs, timings, plugins)
        d.setdefault("training_seconds", timings.get(f"defense:{d['name']}", 0.0))
        defenses.append(d)
    out["defenses"] = defenses
    out["runs"] = runs
    out["timings"] = {k: v for k, v in timings.items() if not _is_run_timing(k)}
    out["converted_from"] = str(raw.get("schema_version", ""))
    out["schema_version"] = SCHEMA_VERSION
    return out


def _upgrade_rows(rows: list[dict[str, Any]], defense: str | None, runs: list[dict[str, Any]],
                  timings: dict[str, float], plugins: dict[str, str]) -> list[dict[str, Any]]:
    prefix = f"{defense}/" if defense else ""
    ids: dict[str, str] = {}
    out = []
    for row in rows:
        row = dict(row)
        params, details = row.pop("params", {}) or {}, row.pop("details", {}) or {}
        key = json.dumps([row["attack"], params, details], sort_keys=True, default=str)
        if key not in ids:
            ids[key] = f"{prefix}r{len(ids) + 1}"
            runs.append({"id": ids[key], "attack": row["attack"], "params": params,
                         "provider": plugins.get(row["attack"], ""),
                         "seconds": _seconds(timings, defense, row["attack"], params), "defense": defense,
                         "details": details})
        row["run"] = ids[key]
        row.setdefault("metric_info", {"higher_is_worse": row["threshold"]["op"] == "<=", "unit": ""})
        out.append(row)
    return out


def _is_run_timing(key: str) -> bool:
    return key.startswith("defense:") or key.partition(": ")[2].startswith("attack:") or key.startswith("attack:")


def _seconds(timings: dict[str, float], defense: str | None, attack: str, params: dict[str, Any]) -> float:
    """The 1.x duration of this run: keyed by the policy's params, a subset of the recorded (defaults filled) ones.
    0.0 when no key, or more than one, fits."""
    head = (f"{defense}: " if defense else "") + f"attack:{attack}:"
    fits = []
    for key, seconds in timings.items():
        if not key.startswith(head):
            continue
        try:
            given = json.loads(key[len(head):])
        except ValueError:
            continue
        if isinstance(given, dict) and all(params.get(k) == v for k, v in given.items()):
            fits.append(seconds)
    return float(fits[0]) if len(fits) == 1 else 0.0
