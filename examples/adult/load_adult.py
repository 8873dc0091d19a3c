"""Reading UCI Adult (Census Income, `adult.data`) from a local copy or, when online, from the UCI archive.

Where the file comes from, first match wins:
1. the `path` argument (train.py's `--data-file`);
2. `$AMULET_AUDIT_DATA_HOME/adult/adult.data`;
3. a cached download: `$AMULET_AUDIT_DATA_HOME/adult/` when that variable is set, else
   `$XDG_CACHE_HOME/amulet-audit/adult/` (default `~/.cache/amulet-audit/adult/`);
4. a download from the UCI archive into that cache.

The file is never copied into the repository. Both layouts are read: the UCI original (no header) and the
copy with a header line (as in the project's shared test data, whose SHA-256 is checked; a mismatch warns).

Source: Becker, B. & Kohavi, R. (1996). Adult. UCI Machine Learning Repository,
https://doi.org/10.24432/C5XW20 (CC BY 4.0).
"""

from __future__ import annotations

import os
import urllib.request
import warnings
from pathlib import Path

import pandas as pd

from amulet_audit.inputs.data import sha256_file

URL = "https://archive.ics.uci.edu/ml/machine-learning-databases/adult/adult.data"
N_RECORDS = 32561
COLUMNS = (
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education_num",
    "marital_status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital_gain",
    "capital_loss",
    "hours_per_week",
    "native_country",
    "income",
)
NUMERIC = ("age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week")
# SHA-256 of the copy with a header line added (the project's shared test data, see its README).
HEADER_COPY_SHA256 = "7974b56173c9e296a971a3881558f1cf56f19bd7faa18d226136f319339efcaa"
TIMEOUT_S = 60


class AdultDataError(RuntimeError):
    """The Adult data could not be found, downloaded or read."""


def cache_dir() -> Path:
    """Folder that holds a downloaded copy."""
    home = os.environ.get("AMULET_AUDIT_DATA_HOME")
    if home:
        return Path(home).expanduser() / "adult"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "amulet-audit" / "adult"


def locate(path: str | Path | None = None, *, download: bool = True) -> Path:
    """The local file to read, downloading it into `cache_dir()` when no copy exists and `download` is true."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise AdultDataError(f"{path}: Adult data file not found; check --data-file.")
        return path
    cached = cache_dir() / "adult.data"
    if cached.is_file():
        return cached
    if not download:
        raise AdultDataError(
            f"no Adult data at {cached}; pass --data-file PATH, set AMULET_AUDIT_DATA_HOME, or allow a download."
        )
    return _download(cached)


def _download(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(URL, timeout=TIMEOUT_S) as response:
            part.write_bytes(response.read())
    except OSError as exc:  # URLError, timeouts and HTTP errors are all OSErrors
        part.unlink(missing_ok=True)
        raise AdultDataError(
            f"could not download {URL} ({exc}); pass --data-file PATH to a local adult.data, "
            "or put it at $AMULET_AUDIT_DATA_HOME/adult/adult.data."
        ) from None
    try:
        _check_records(_read(part), str(URL))
    except AdultDataError:
        part.unlink(missing_ok=True)
        raise
    part.replace(target)
    return target


def _has_header(path: Path) -> bool:
    with open(path, encoding="utf-8") as fh:
        return fh.readline().lstrip().lower().startswith("age")


def _read(path: Path) -> pd.DataFrame:
    header = _has_header(path)
    try:
        df = pd.read_csv(
            path,
            header=None,
            names=list(COLUMNS),
            skiprows=1 if header else 0,
            sep=",",
            skipinitialspace=True,  # fields are separated by ", "
            na_values=["?"],
            dtype={c: "float64" if c in NUMERIC else "object" for c in COLUMNS},
            skip_blank_lines=True,
        )
    except (ValueError, pd.errors.ParserError) as exc:
        raise AdultDataError(f"{path}: not readable as UCI Adult ({str(exc).splitlines()[0]}); expected 15 comma-separated fields.") from None
    return df


def _check_records(df: pd.DataFrame, where: str) -> None:
    if df.shape != (N_RECORDS, len(COLUMNS)) or df["income"].isna().any():
        raise AdultDataError(
            f"{where}: expected {N_RECORDS} records of {len(COLUMNS)} fields, found {df.shape[0]} x {df.shape[1]}; "
            "the file is not the UCI adult.data training split."
        )


def load_adult(path: str | Path | None = None, *, download: bool = True) -> pd.DataFrame:
    """UCI Adult as a DataFrame with the 15 columns in COLUMNS (snake_case; the label column is `income`).

    Missing values (`?`) are NaN; numeric columns are float64, the others strings; `income` is `<=50K` or `>50K`.
    `path` is a local adult.data (with or without a header line); without one, see `locate`.
    """
    file = locate(path, download=download)
    if _has_header(file):
        digest = sha256_file(file)
        if digest != HEADER_COPY_SHA256:
            warnings.warn(
                f"{file}: SHA-256 {digest} differs from the reference copy ({HEADER_COPY_SHA256}); "
                "results may not match the documented ones.",
                stacklevel=2,
            )
    df = _read(file)
    if not _has_header(file):
        try:
            _check_records(df, str(file))
        except AdultDataError as exc:
            warnings.warn(str(exc), stacklevel=2)
    # adult.test writes labels with a trailing period ("<=50K."); accept it too.
    df["income"] = df["income"].str.rstrip(".")
    return df
