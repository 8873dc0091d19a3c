"""Data spec (`*.data.yaml`) and the dataset it describes (DESIGN.md, "Data spec")."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from amulet_audit.core.digest import sha256_file
from amulet_audit.core.errors import InputError
from amulet_audit.core.yamlio import describe_validation_error, load_yaml
from amulet_audit.inputs.csvfile import decimal_comma_hint, header_hint, read_csv


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    format: Literal["csv", "parquet", "npz"]
    path: str
    # csv only: as spreadsheet programs write it. Each is inferred from the file when not given (see csvfile.py).
    sep: str | None = None  # field separator: ",", ";", "\t" (or tab), "|"
    decimal: Literal[".", ","] | None = None  # decimal mark; "," is detected in ';'- and tab-separated files
    thousands: str | None = None  # thousands separator, e.g. "." in "1.234,5"; "." is detected with a decimal comma
    encoding: str | None = None  # e.g. utf-8 (a BOM is removed), cp1252, latin-1; default UTF-8, else cp1252
    quotechar: str | None = None  # default '"'

    @field_validator("sep")
    @classmethod
    def _sep(cls, v):
        if v is not None and (v == "" or "\n" in v or "\r" in v):
            raise ValueError('sep must be the field separator, e.g. ",", ";" or "\\t"')
        return v

    @field_validator("quotechar", "thousands")
    @classmethod
    def _one_char(cls, v):
        if v is not None and len(v) != 1:
            raise ValueError("must be a single character")
        return v

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, v):
        import codecs

        if v is not None:
            try:
                codecs.lookup(v)
            except LookupError:
                raise ValueError(f"unknown encoding '{v}'; e.g. utf-8, cp1252, latin-1") from None
        return v

    @model_validator(mode="after")
    def _csv_options(self) -> "Source":
        given = [k for k in ("sep", "decimal", "thousands", "encoding", "quotechar") if getattr(self, k) is not None]
        if given and self.format != "csv":
            raise ValueError(f"{', '.join(given)} apply to csv sources only")
        if self.decimal is not None and self.decimal == self.thousands:
            raise ValueError("decimal and thousands must differ")
        return self


class Split(_Strict):
    column: str = "split"
    train: Any = "train"
    holdout: Any = "holdout"


class FeatureSelection(_Strict):
    exclude: list[str] | None = None
    array: str | None = None  # npz only: one 2-D (or image) array holding every feature

    @model_validator(mode="after")
    def _one(self) -> "FeatureSelection":
        if (self.exclude is None) == (self.array is None):
            raise ValueError("give exactly one of 'exclude' (a list of columns) or 'array' (an npz array name)")
        return self


class TrainingRecipe(_Strict):
    """How the audited model was trained; reference, shadow and defended copies follow it."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    optimizer: Literal["adam", "sgd", "adamw"] = "adam"
    lr: float = Field(0.001, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)


class EndpointMapping(_Strict):
    """How to query a model behind a prediction service (`--endpoint URL`; `inputs.endpoint`): each request POSTs a
    JSON object whose field `features` holds the records, as a list of {feature: value} objects (`layout:
    records`), one object of {feature: [values]} (`columns`) or a list of value lists in feature order (`rows`,
    also for image inputs); the response's field `scores` (per-class scores, e.g. probabilities: one list per
    record, or one number per record for the probability of class index 1) or `labels` (one class value or index
    per record) holds the answers (dotted paths reach nested fields). Limits: `budget` records queried in all
    (None: no limit), `rate_limit` requests per second, `timeout` seconds per request, `retries` after a failure
    (connection error, timeout, HTTP 429 or 5xx), waiting `backoff` seconds, doubled at each retry."""

    features: str = "instances"
    layout: Literal["records", "columns", "rows"] = "records"
    scores: str | None = None
    labels: str | None = None
    batch_size: int = Field(256, ge=1)
    budget: int | None = Field(None, ge=1)
    rate_limit: float | None = Field(None, gt=0)
    timeout: float = Field(30.0, gt=0)
    retries: int = Field(3, ge=0)
    backoff: float = Field(0.5, ge=0)

    @model_validator(mode="after")
    def _one_answer(self) -> "EndpointMapping":
        if (self.scores is None) == (self.labels is None):
            raise ValueError("name exactly one response field: 'scores' (per-class scores) or 'labels'")
        return self


class DataSpec(_Strict):
    name: str
    task: Literal["classification"] = "classification"
    source: Source
    split: Split = Field(default_factory=Split)
    features: list[str] | FeatureSelection
    target: str
    # The class order: output index i of the model is classes[i]. Required for text labels (only the model's
    # training code knows their order); numeric labels 0..k-1 are their own indices.
    classes: list[str | int | float | bool] | None = None
    positive_label: Any = None
    # The audit stops when the model's accuracy on its own training records is below the majority-class rate (the
    # class order is then likely inverted); true says such a low training accuracy is expected (e.g. class weights).
    expect_low_training_accuracy: bool = False
    sensitive: list[str] = Field(default_factory=list)
    input_shape: list[int] | None = None
    input_range: tuple[float, float] | None = None
    training: TrainingRecipe = Field(default_factory=TrainingRecipe)
    # what the model outputs (amulet_audit.core.outputs.CONVENTIONS); None: detected from its outputs on probe records
    output: Literal["logits", "log_probabilities", "probabilities", "single_logit", "labels"] | None = None
    # how to query the model behind a prediction service (--endpoint URL); ignored for a model file
    endpoint: EndpointMapping | None = None

    @field_validator("input_range")
    @classmethod
    def _range(cls, v):
        if v is not None and not v[0] < v[1]:
            raise ValueError("input_range must be [low, high] with low < high")
        return v

    @field_validator("classes")
    @classmethod
    def _classes(cls, v):
        if v is None:
            return v
        names = [label_string(c) for c in v]
        if len(names) < 2:
            raise ValueError("classes must list two or more labels, in the order of the model's outputs")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"classes lists {', '.join(repr(d) for d in dupes)} more than once")
        return v

    @field_validator("input_shape")
    @classmethod
    def _shape(cls, v):
        if v is not None and (not v or any(d < 1 for d in v)):
            raise ValueError("input_shape must list positive dimensions, e.g. [1, 8, 8]")
        return v


@dataclass
class AuditData:
    """Arrays ready for attacks. `train` = members (the model's training records); `holdout` = non-members."""

    spec: DataSpec
    spec_path: Path
    spec_sha256: str
    files: dict[str, str]  # data file -> sha256
    feature_names: list[str]
    classes: list[str]  # label values as strings, in class-index order
    x_train: np.ndarray  # float32, shape (n, *input_shape) or (n, d)
    y_train: np.ndarray  # int64 class indices
    x_holdout: np.ndarray
    y_holdout: np.ndarray
    sensitive_train: dict[str, np.ndarray] = field(default_factory=dict)  # column -> group labels (str)
    sensitive_holdout: dict[str, np.ndarray] = field(default_factory=dict)
    reading: str = ""  # how the data file was read (CSV: separator, decimal mark, encoding), for `validate`

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int | None:
        """Class index of the favourable outcome, or None when the spec names none."""
        if self.spec.positive_label is None:
            return None
        return self.classes.index(resolve_label(self.spec.positive_label, self.classes))

    @property
    def input_range(self) -> tuple[float, float] | None:
        return tuple(self.spec.input_range) if self.spec.input_range is not None else None

    @property
    def n_features(self) -> int:
        return int(np.prod(self.x_train.shape[1:]))

    @property
    def sha256(self) -> str:
        """One digest over the spec and every data file it reads."""
        h = hashlib.sha256(self.spec_sha256.encode())
        for name in sorted(self.files):
            h.update(f"{name}:{self.files[name]}".encode())
        return h.hexdigest()


def load_spec(path: str | Path) -> DataSpec:
    """Parse and validate a data spec, without reading the data."""
    path = Path(path)
    raw, node = load_yaml(path, "data spec")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a data spec is a YAML mapping with keys name, source, features, target; see DESIGN.md.")
    try:
        return DataSpec.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, node, exc, "see the data spec format in DESIGN.md.")) from None


def load_data(path: str | Path) -> AuditData:
    """Read the data spec at `path` and the data it names; every problem is an InputError."""
    path = Path(path)
    spec = load_spec(path)
    src = (path.parent / spec.source.path).resolve()
    if not src.is_file():
        raise InputError(f"{path}: key 'source.path': data file {src} not found; paths are relative to the data spec.")
    columns, reading = _read_columns(src, spec, path)

    def col(name: str, key: str) -> np.ndarray:
        if name not in columns:
            known = ", ".join(sorted(map(str, columns))[:30])
            hint = header_hint(list(columns)) if spec.source.format == "csv" else ""
            raise InputError(f"{path}: key '{key}': column '{name}' is not in {src.name} (columns: {known}){hint}.")
        return columns[name]

    split = col(spec.split.column, "split.column")
    split_s = np.asarray(split).astype(str)
    train_mask = split_s == str(spec.split.train)
    hold_mask = split_s == str(spec.split.holdout)
    for mask, key, val in ((train_mask, "split.train", spec.split.train), (hold_mask, "split.holdout", spec.split.holdout)):
        if not mask.any():
            values = ", ".join(sorted(set(split_s.tolist()))[:10])
            raise InputError(
                f"{path}: key '{key}': no record has {spec.split.column} == '{val}' (values present: {values}); the split is empty."
            )
    named = {str(spec.split.train), str(spec.split.holdout)}
    for value in sorted(set(split_s.tolist()) - named):  # e.g. "Train" or "holdout " beside "train" and "holdout"
        for key, want in (("split.train", str(spec.split.train)), ("split.holdout", str(spec.split.holdout))):
            kind = _near_copy(value, {want})
            if kind is not None:
                raise InputError(
                    f"{path}: key '{key}': column '{spec.split.column}' of {src.name} has the value {value!r}, which "
                    f"differs from '{want}' by {kind}; its {int((split_s == value).sum()):,} record(s) would be left out "
                    f"of the audit: normalise the values in {src.name}."
                )

    y_raw = np.asarray(col(spec.target, "target"))
    if _has_missing(y_raw):
        raise InputError(f"{path}: key 'target': column '{spec.target}' of {src.name} has missing labels; drop those records.")
    y_str = _label_strings(y_raw)
    _check_labels_across_splits(path, spec, src.name, y_str, train_mask, hold_mask)
    if len(set(y_str.tolist())) < 2:
        raise InputError(f"{path}: key 'target': column '{spec.target}' has a single label value ({y_str[0]}); a classifier needs two or more.")
    classes = _class_order(path, spec, src.name, y_raw, y_str)
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in y_str], dtype=np.int64)
    if spec.positive_label is not None and resolve_label(spec.positive_label, classes) not in index:
        raise InputError(
            f"{path}: key 'positive_label': '{spec.positive_label}' is not a value of '{spec.target}' "
            f"(classes: {', '.join(classes[:10])}); name the favourable outcome exactly as one of the classes."
        )

    if isinstance(spec.features, FeatureSelection) and spec.features.array is not None:
        x = np.asarray(col(spec.features.array, "features.array"))
        feature_names = [spec.features.array]
    else:
        if isinstance(spec.features, FeatureSelection):
            excluded = set(spec.features.exclude or [])
            for name in excluded:
                col(name, "features.exclude")
            excluded |= {spec.target, spec.split.column}
            feature_names = [c for c in columns if c not in excluded and np.asarray(columns[c]).ndim == 1]
        else:
            feature_names = list(spec.features)
        if not feature_names:
            raise InputError(f"{path}: key 'features': no feature columns remain; list the features or exclude fewer columns.")
        cols = []
        for name in feature_names:
            v = np.asarray(col(name, "features"))
            if not (np.issubdtype(v.dtype, np.number) or v.dtype == bool):
                hint = decimal_comma_hint(v) if spec.source.format == "csv" else ""
                raise InputError(
                    f"{path}: key 'features': column '{name}' is not numeric in {src.name} (e.g. '{_first_text(v)}'){hint or ''}; "
                    + ("" if hint else "encode it (one-hot or ordinal) before auditing, or exclude it.")
                )
            cols.append(v.astype(np.float64))
        x = np.stack(cols, axis=1)
    if not np.issubdtype(x.dtype, np.number) and x.dtype != bool:
        raise InputError(f"{path}: key 'features': features must be numeric; encode them before auditing.")
    x = x.astype(np.float32)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        which = ""
        if x.ndim == 2 and len(feature_names) == x.shape[1]:
            cols_bad = [feature_names[j] for j in np.where(~np.isfinite(x).all(axis=0))[0]]
            which = f" in column(s) {', '.join(cols_bad[:5])}"
        raise InputError(
            f"{path}: {int(bad.sum())} record(s) have NaN or infinite feature values{which}; impute or drop them before auditing."
        )
    if spec.input_shape is not None:
        want = int(np.prod(spec.input_shape))
        if int(np.prod(x.shape[1:])) != want:
            raise InputError(
                f"{path}: key 'input_shape': {spec.input_shape} holds {want} values but each record has "
                f"{int(np.prod(x.shape[1:]))} features; fix input_shape."
            )
        x = x.reshape(len(x), *spec.input_shape)
    if spec.input_range is not None:
        lo, hi = spec.input_range
        if x.min() < lo - 1e-6 or x.max() > hi + 1e-6:
            raise InputError(
                f"{path}: key 'input_range': features span [{x.min():.4g}, {x.max():.4g}], outside {list(spec.input_range)}; "
                "widen input_range or rescale the data."
            )

    sens_train, sens_hold = {}, {}
    for name in spec.sensitive:
        v = np.asarray(col(name, "sensitive")).astype(str)
        sens_train[name] = v[train_mask]
        sens_hold[name] = v[hold_mask]

    spec_sha = sha256_file(path)
    return AuditData(
        spec=spec,
        spec_path=path.resolve(),
        spec_sha256=spec_sha,
        files={spec.source.path: sha256_file(src)},
        feature_names=feature_names,
        classes=classes,
        x_train=np.ascontiguousarray(x[train_mask]),
        y_train=y[train_mask],
        x_holdout=np.ascontiguousarray(x[hold_mask]),
        y_holdout=y[hold_mask],
        sensitive_train=sens_train,
        sensitive_holdout=sens_hold,
        reading=reading,
    )


def label_string(value: Any) -> str:
    """A label as the audit names it: integral floats as integers (1.0 -> "1"), everything else as str()."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, np.generic):
        value = value.item()
    return str(value)


# YAML 1.1 reads these unquoted words as booleans: `classes: [no, yes]` arrives as [False, True].
_YAML_BOOLS = {True: {"y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"},
               False: {"n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"}}


def resolve_label(value: Any, labels: list[str]) -> str:
    """`value` from the data spec as one of `labels` (the data's label strings): `label_string(value)`, except that a
    YAML boolean stands for the one label spelled as a YAML 1.1 boolean word (unquoted `yes` in `classes: [no, yes]`
    is the label "yes")."""
    text = label_string(value)
    if text in labels or not isinstance(value, bool):
        return text
    spelled = [label for label in labels if label in _YAML_BOOLS[value]]
    return spelled[0] if len(spelled) == 1 else text


def _label_strings(y: np.ndarray) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    return np.asarray([label_string(v) for v in y.tolist()], dtype=object)


def _has_missing(y: np.ndarray) -> bool:
    if y.dtype.kind == "f":
        return bool(np.isnan(y).any())
    if y.dtype == object:
        return any(v is None or (isinstance(v, float) and v != v) for v in y.tolist())
    return False


def _numeric_order(y_raw: np.ndarray, y_str: np.ndarray) -> list[str] | None:
    """Labels in class-index order when they are numbers (0..k-1 map to 0..k-1) or booleans (False, True), or text
    that spells integers ("0", "1"); None for text labels, whose order only the model's training code knows."""
    uniq = sorted(set(y_str.tolist()))
    if y_raw.dtype == bool:
        return [v for v in ("False", "True") if v in uniq]
    if np.issubdtype(y_raw.dtype, np.number):
        return sorted(uniq, key=float)
    if all(re.fullmatch(r"[+-]?\d+", v) for v in uniq):
        return sorted(uniq, key=int)
    return None


def yaml_list(values: list[str]) -> str:
    """`values` as a YAML flow list to paste into a data spec: plain words when each reads back as itself
    ([denied, approved]), else every item double-quoted (["<=50K", ">50K"]; ["no", "yes"], which YAML would read as
    booleans unquoted)."""
    import json

    import yaml

    def plain(v: str) -> bool:
        return bool(re.fullmatch(r"[A-Za-z_][\w .-]*", v)) and v == v.strip() and yaml.safe_load(v) == v

    if all(plain(v) for v in values):
        return "[" + ", ".join(values) + "]"
    return "[" + ", ".join(json.dumps(v, ensure_ascii=False) for v in values) + "]"


def _class_order(path: Path, spec: DataSpec, file: str, y_raw: np.ndarray, y_str: np.ndarray) -> list[str]:
    """The class names in the order of the model's outputs (index i is classes[i])."""
    present = sorted(set(y_str.tolist()))
    if spec.classes is not None:
        classes = [resolve_label(c, present) for c in spec.classes]
        unknown = [v for v in present if v not in classes]
        if unknown:
            raise InputError(
                f"{path}: key 'classes': column '{spec.target}' of {file} has label(s) {_quoted(unknown)} that classes "
                f"{yaml_list(classes)} does not list; list every label value, in the order of the model's outputs."
            )
        return classes
    order = _numeric_order(y_raw, y_str)
    if order is not None:
        return order
    return _refuse_text_labels(path, spec, present)


def _refuse_text_labels(path: Path, spec: DataSpec, present: list[str]) -> list[str]:
    shown = present if len(present) <= 10 else present[:10] + ["..."]
    if len(present) == 2:
        # the usual convention: the favourable outcome is 1; without one named, show the order sorting would not give
        favourable = resolve_label(spec.positive_label, present) if spec.positive_label is not None else present[0]
        a, b = (favourable, next(v for v in present if v != favourable)) if favourable in present else present
        example = f"e.g. `classes: {yaml_list([b, a])}` if the model was trained with {b} = 0 and {a} = 1"
    else:
        example = f"e.g. `classes: {yaml_list(present[:10])}` reordered to the model's outputs"
    raise InputError(
        f"{path}: key 'classes': column '{spec.target}' holds text labels ({_quoted(shown)}), and only the model's "
        f"training code knows which output is which label; state the order in the data spec, {example} "
        "(output index i is classes[i]); sorting the labels would be a guess."
    )


def _quoted(values) -> str:
    return ", ".join(v if v == "..." else repr(v) for v in values)


# Ways one label is commonly mis-written as another: (normalisation, what differs).
_NEAR = (
    (lambda s: s.strip(), "leading or trailing spaces"),
    (lambda s: s.rstrip("."), "a trailing '.'"),
    (lambda s: s.strip().rstrip(".").strip(), "a trailing '.' and spaces"),
    (lambda s: s.strip().lower(), "upper/lower case"),
    (lambda s: s.strip().rstrip(".").strip().lower(), "a trailing '.', spaces or case"),
)


def _near_copy(label: str, others: set[str]) -> str | None:
    """What differs when `label` is a mis-written copy of one of `others`, else None."""
    for normalise, what in _NEAR:
        form = normalise(label)
        if form and any(normalise(o) == form for o in others):
            return what
    return None


def _check_labels_across_splits(path: Path, spec: DataSpec, file: str, y_str: np.ndarray, train_mask: np.ndarray,
                                hold_mask: np.ndarray) -> None:
    """Labels must mean the same in both splits: one that occurs in only one split is a data problem (e.g. Adult's
    test file writes '>50K.' where the training file writes '>50K'), unless `classes` declares it as a class that is
    simply absent from the other split and it is no near-copy of another label."""
    train, hold = set(y_str[train_mask].tolist()), set(y_str[hold_mask].tolist())
    present = sorted(set(y_str.tolist()))
    declared = {resolve_label(c, present) for c in spec.classes} if spec.classes is not None else set()
    problems, kinds = [], []
    for only, other, name, other_name in ((hold - train, train, "holdout", "training"),
                                         (train - hold, hold, "training", "holdout")):
        bad = []
        for label in sorted(only):
            kind = _near_copy(label, other)
            if kind is not None:
                kinds.append(kind)
                bad.append(label)
            elif label not in declared:
                bad.append(label)
        if bad:
            problems.append((name, bad, other_name, sorted(other)))
    if not problems:
        return
    name, bad, other_name, other = problems[0]
    text = (f"{path}: key 'target': column '{spec.target}' of {file} has labels that occur only in the {name} split "
            f"({_quoted(bad[:10])}); the {other_name} split has {_quoted(other[:10])}")
    if kinds:
        text += f" — normalise the labels (they differ by {kinds[0]}) so both splits use the same values."
    else:
        text += (" — correct the labels so both splits use the same values, or, if these are real classes absent from "
                 "one split, list every class under `classes` in the data spec.")
    raise InputError(text)


def _first_text(v: np.ndarray) -> str:
    for item in v.tolist()[:1000]:
        if isinstance(item, str):
            return item
    return str(v[0])


def _read_columns(src: Path, spec: DataSpec, spec_path: Path) -> tuple[dict[str, np.ndarray], str]:
    """Column name -> values, and how the file was read (CSV dialect; empty for parquet and npz)."""
    fmt = spec.source.format
    reading = ""
    if fmt == "csv":
        df, dialect = read_csv(src, spec.source, spec_path)
        reading = dialect.describe()
    else:
        try:
            if fmt == "npz":
                with np.load(src, allow_pickle=False) as z:
                    return {k: z[k] for k in z.files}, reading
            import pandas as pd

            df = pd.read_parquet(src)
        except Exception as exc:  # a corrupt or wrong-format file
            raise InputError(
                f"{spec_path}: key 'source': could not read {src.name} as {fmt} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
                "check source.format and the file."
            ) from None
    out = {}
    for c in df.columns:
        s = df[c]
        out[str(c)] = s.to_numpy() if s.dtype != "string" and s.dtype != "str" else s.astype(object).to_numpy()
    return out, reading
