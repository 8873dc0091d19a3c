"""CSV files as spreadsheet programs write them: field separator, decimal mark, encoding and byte-order mark,
quoting and line endings (Windows CRLF, old Mac CR). Settings the data spec's `source` does not give are
inferred from the file and reported (`Dialect.describe`), so `validate` can show how the file was read.

pandas is imported inside `read_csv`: `validate` of a policy alone must start fast.
"""

from __future__ import annotations

import codecs
import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amulet_audit.core.errors import InputError

# Separators tried when the data spec gives none, in order of preference on a tie.
SEPARATORS = (",", ";", "\t", "|")
_BOMS = (  # UTF-32 first: its little-endian BOM starts with UTF-16's
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)
# A number written with a decimal comma: 1,5 · -0,25 · ,5 · 3 · 1,5e-3 (no thousands separator).
_DECIMAL_COMMA = re.compile(r"^[+-]?(\d+(,\d*)?|,\d+)([eE][+-]?\d+)?$")
# 1,234 · 12,345,678 · 1,234.5: a comma that may separate thousands.
_THOUSANDS_COMMA = re.compile(r"^[+-]?\d{1,3}(,\d{3})*(\.\d+)?$")
# 1.234,5 · -2.711,163 · 12.345.678: '.' separating thousands, ',' the decimal mark (German, Dutch, ... locales).
_DOT_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(\.\d{3})+(,\d*)?$")
_SNIFF_ROWS = 200
_SNIFF_CHARS = 1 << 16


@dataclass
class Dialect:
    """How a CSV file was read. `inferred` names the settings that came from the file, not the data spec."""

    sep: str
    decimal: str
    encoding: str
    quotechar: str
    inferred: list[str] = field(default_factory=list)
    decimal_comma_columns: list[str] = field(default_factory=list)
    thousands: str | None = None

    def describe(self) -> str:
        """e.g. "sep ';' (detected), decimal ',' (detected), encoding cp1252 (detected: not UTF-8)"."""
        sep = {"\t": "tab"}.get(self.sep, repr(self.sep))
        parts = [f"sep {sep}" + (" (detected)" if "sep" in self.inferred else ""),
                 f"decimal {self.decimal!r}" + (" (detected)" if "decimal" in self.inferred else ""),
                 f"encoding {self.encoding}" + (" (detected)" if "encoding" in self.inferred else "")]
        if self.thousands:
            parts.insert(2, f"thousands {self.thousands!r}" + (" (detected)" if "thousands" in self.inferred else ""))
        return ", ".join(parts)


def normalise_sep(value: str) -> str:
    """The separator as written in YAML: `"\\t"` and `tab` mean a tab character."""
    return "\t" if value in ("\\t", "tab", "TAB") else value


def read_csv(src: Path, source: Any, spec_path: Path) -> tuple[Any, Dialect]:
    """(DataFrame, Dialect) for the CSV file `src`; `source` is the data spec's Source (sep, decimal, thousands,
    encoding, quotechar; each None when not given). Every problem is an InputError naming the file and the key."""
    import pandas as pd

    raw = src.read_bytes()
    _refuse_other_formats(raw, src, spec_path)
    text, encoding, enc_inferred = _decode(raw, source.encoding, src, spec_path)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    inferred = ["encoding"] if enc_inferred else []
    quotechar = source.quotechar or '"'

    first, _, rest = text.partition("\n")
    excel_sep = re.fullmatch(r"\s*sep=(.)\s*", first)  # Excel's "sep=;" first line
    if excel_sep:
        text = rest
    if source.sep is not None:
        sep = normalise_sep(source.sep)
    elif excel_sep:
        sep = excel_sep.group(1)
    else:
        sep = sniff_separator(text, quotechar)
        inferred.append("sep")
    decimal = source.decimal or "."
    kwargs: dict[str, Any] = dict(sep=sep, decimal=decimal, quotechar=quotechar, skipinitialspace=True)
    if source.thousands:
        kwargs["thousands"] = source.thousands
    if len(sep) > 1:
        kwargs["engine"] = "python"  # a multi-character separator is a regular expression there
    try:
        df = pd.read_csv(io.StringIO(text), **kwargs)
    except Exception as exc:  # a malformed file: unbalanced quotes, ragged rows
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"{spec_path}: key 'source': could not read {src.name} as CSV with sep {sep!r} ({type(exc).__name__}: {msg}); "
            "check the file, or set source.sep / source.quotechar to the ones it uses."
        ) from None
    df.columns = _clean_names(df.columns)
    dialect = Dialect(sep, decimal, encoding, quotechar, inferred, thousands=source.thousands)
    if source.decimal is None and sep != ",":
        # A ';'- or tab-separated file from a decimal-comma locale: "1,5" is a number, and so is "1.234,5" (with '.'
        # separating thousands) when the column also has a decimal comma. (With sep ',' a comma inside a quoted
        # value is more likely a thousands separator, so it is never read as a decimal mark.)
        dot_thousands = source.thousands in (None, ".")
        for name in df.columns:
            values, grouped = _as_decimal_comma(df[name], dot_thousands)
            if values is not None:
                df[name] = values
                dialect.decimal_comma_columns.append(str(name))
                if grouped and not dialect.thousands:
                    dialect.thousands = "."
                    dialect.inferred.append("thousands")
        if dialect.decimal_comma_columns:
            dialect.decimal = ","
            dialect.inferred.append("decimal")
    return df, dialect


def sniff_separator(text: str, quotechar: str = '"') -> str:
    """The separator (one of SEPARATORS) that splits the header and the first rows into the same number (> 1) of
    fields; ',' when none does. Quote-aware (a separator inside quotes does not count)."""
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS:
        sample = sample.rsplit("\n", 1)[0]  # never judge a row cut in half
    best, best_score = ",", (0.0, 0)
    for sep in SEPARATORS:
        try:
            rows = [r for _, r in zip(range(_SNIFF_ROWS), csv.reader(io.StringIO(sample), delimiter=sep,
                                                                    quotechar=quotechar, skipinitialspace=True)) if r]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        share = sum(len(r) == width for r in rows) / len(rows)
        score = (share, width)
        if share >= 0.9 and score > best_score:
            best, best_score = sep, score
    return best


def header_hint(columns: list[str]) -> str:
    """A hint when a column name holds a ';' or a tab: the file was split with the wrong separator."""
    for name in columns:
        for sep, word in ((";", "';'"), ("\t", "a tab")):
            if sep in str(name):
                shown = str(name).replace("\t", "\\t")
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                yaml_sep = '";"' if sep == ";" else '"\\t"'
                return (f"; the header '{shown}' holds {word}, so the file is probably separated by {word}: "
                        f"set source.sep: {yaml_sep} in the data spec")
    return ""


def decimal_comma_hint(values) -> str:
    """A hint when a text column's values look like numbers written with a comma (a decimal comma, or a thousands
    separator when every comma is followed by groups of three digits)."""
    sample = [str(v).strip() for v in list(values)[:200] if isinstance(v, str)]
    if not sample or not any("," in v for v in sample):
        return ""
    if all(_THOUSANDS_COMMA.match(v) for v in sample):
        return ('; its values look like numbers written with a comma: set source.thousands: "," in the data spec if it '
                'separates thousands (1,234), or source.decimal: "," if it is the decimal mark')
    if all(_DECIMAL_COMMA.match(v) for v in sample):
        return '; its values look like numbers with a decimal comma: set source.decimal: "," in the data spec'
    if all(_DECIMAL_COMMA.match(v) or _DOT_THOUSANDS.match(v) for v in sample):
        example = next(v for v in sample if _DOT_THOUSANDS.match(v))
        return (f"; its values look like numbers with a decimal comma and '.' separating thousands ('{example}'): "
                'set decimal: "," and thousands: "." under source in the data spec')
    return ""


def _refuse_other_formats(raw: bytes, src: Path, spec_path: Path) -> None:
    if raw.startswith(b"PK\x03\x04"):
        raise InputError(f"{spec_path}: key 'source.format': {src.name} is a zip archive (an Excel .xlsx workbook?), not "
                         "CSV; save it as CSV (e.g. Excel: Save As > CSV UTF-8) or convert it to parquet.")
    if raw.startswith(b"PAR1"):
        raise InputError(f"{spec_path}: key 'source.format': {src.name} is a parquet file; set source.format: parquet.")
    if raw.startswith(b"\xd0\xcf\x11\xe0"):
        raise InputError(f"{spec_path}: key 'source.format': {src.name} is an old Excel .xls workbook, not CSV; "
                         "save it as CSV (e.g. Excel: Save As > CSV UTF-8).")


def _decode(raw: bytes, declared: str | None, src: Path, spec_path: Path) -> tuple[str, str, bool]:
    """(text, encoding used, whether it was detected rather than declared). A byte-order mark is honoured and
    removed; undeclared files are UTF-8, else cp1252 (what Excel writes on Western-European Windows)."""
    bom = next((name for mark, name in _BOMS if raw.startswith(mark)), None)
    if declared is not None:
        name = codecs.lookup(declared).name
        if name == "utf-8" and bom == "utf-8-sig":
            name = "utf-8-sig"
        elif name in ("utf-16-le", "utf-16-be") and bom == "utf-16":
            name = "utf-16"
        try:
            text = raw.decode(name)
        except UnicodeDecodeError as exc:
            raise InputError(
                f"{spec_path}: key 'source.encoding': {src.name} is not valid {declared} ({_where(raw, exc)}); "
                "set source.encoding to the file's encoding (e.g. utf-8, cp1252, latin-1)."
            ) from None
        return text.lstrip("\ufeff"), declared, False
    if bom is not None:
        try:
            return raw.decode(bom), {"utf-8-sig": "utf-8 with BOM"}.get(bom, bom), True
        except UnicodeDecodeError as exc:
            raise InputError(f"{spec_path}: key 'source.encoding': {src.name} starts with a {bom} byte-order mark but "
                             f"is not valid {bom} ({_where(raw, exc)}); set source.encoding.") from None
    try:
        return raw.decode("utf-8"), "utf-8", False
    except UnicodeDecodeError as utf8_error:
        try:
            return raw.decode("cp1252"), "cp1252", True
        except UnicodeDecodeError:
            raise InputError(
                f"{spec_path}: key 'source.encoding': {src.name} is neither UTF-8 ({_where(raw, utf8_error)}) nor cp1252; "
                "set source.encoding to the file's encoding (e.g. latin-1, shift_jis, gb18030)."
            ) from None


def _where(raw: bytes, exc: UnicodeDecodeError) -> str:
    line = raw.count(b"\n", 0, exc.start) + 1
    return f"byte 0x{raw[exc.start]:02x} on line {line}"


def _clean_names(columns) -> list[Any]:
    """Column names without surrounding spaces (` age ` -> `age`), unless that would make two names equal."""
    names = [str(c).strip() if isinstance(c, str) else c for c in columns]
    return names if len(set(map(str, names))) == len(names) else list(columns)


def _as_decimal_comma(series, dot_thousands: bool = True):
    """(the column as float64, whether '.' separates its thousands) when every value is a number written with a
    decimal comma (and one has a comma), with '.' separating thousands when `dot_thousands` (1.234,5) and one value
    is so written; else (None, False)."""
    import numpy as np
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype):
        return None, False
    present = series.dropna()
    if present.empty:
        return None, False
    texts = [str(v).strip() for v in present.tolist()]
    grouped = dot_thousands and any(_DOT_THOUSANDS.match(v) for v in texts)
    if not all(_DECIMAL_COMMA.match(v) or (grouped and _DOT_THOUSANDS.match(v)) for v in texts) \
            or not any("," in v for v in texts):
        return None, False
    out = np.full(len(series), np.nan)
    out[np.asarray(series.notna())] = [float(v.replace(".", "").replace(",", ".") if grouped else v.replace(",", "."))
                                       for v in texts]
    return out, grouped
