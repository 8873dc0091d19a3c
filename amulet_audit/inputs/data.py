"""Data spec (`*.data.yaml`) and the dataset it describes (DESIGN.md, "Data spec")."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from amulet_audit.core.digest import sha256_file
from amulet_audit.core.errors import InputError
from amulet_audit.core.yamlio import describe_validation_error, load_yaml


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Source(_Strict):
    format: Literal["csv", "parquet", "npz"]
    path: str


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


class DataSpec(_Strict):
    name: str
    task: Literal["classification"] = "classification"
    source: Source
    split: Split = Field(default_factory=Split)
    features: list[str] | FeatureSelection
    target: str
    positive_label: Any = None
    sensitive: list[str] = Field(default_factory=list)
    input_shape: list[int] | None = None
    input_range: tuple[float, float] | None = None
    training: TrainingRecipe = Field(default_factory=TrainingRecipe)

    @field_validator("input_range")
    @classmethod
    def _range(cls, v):
        if v is not None and not v[0] < v[1]:
            raise ValueError("input_range must be [low, high] with low < high")
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

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def positive_index(self) -> int | None:
        """Class index of the favourable outcome, or None when the spec names none."""
        if self.spec.positive_label is None:
            return None
        return self.classes.index(str(self.spec.positive_label))

    @property
    def input_range(self) -> tuple[float, float] | None:
        return tuple(self.spec.input_range) if self.spec.input_range is not None else None

    @property
    # what the model outputs (amulet_audit.ops.scores); None: detected from its outputs on probe records
    output: Literal["logits", "log_probabilities", "probabilities", "single_logit", "labels"] | None = None
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
    columns = _read_columns(src, spec, path)

    def col(name: str, key: str) -> np.ndarray:
        if name not in columns:
            known = ", ".join(sorted(columns)[:30])
            raise InputError(f"{path}: key '{key}': column '{name}' is not in {src.name} (columns: {known}).")
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

    y_raw = np.asarray(col(spec.target, "target"))
    if y_raw.dtype.kind == "f" and np.isnan(y_raw).any() or (y_raw.dtype == object and any(v is None for v in y_raw)):
        raise InputError(f"{path}: key 'target': column '{spec.target}' has missing labels; drop those records.")
    y_str = _label_strings(y_raw)
    classes = _sorted_labels(y_raw, y_str)
    if len(classes) < 2:
        raise InputError(f"{path}: key 'target': column '{spec.target}' has a single label value ({classes[0]}); a classifier needs two or more.")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in y_str], dtype=np.int64)
    if spec.positive_label is not None and str(spec.positive_label) not in index:
        raise InputError(
            f"{path}: key 'positive_label': '{spec.positive_label}' is not a value of '{spec.target}' "
            f"(values: {', '.join(classes[:10])}); name the favourable outcome exactly."
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
                raise InputError(
                    f"{path}: key 'features': column '{name}' is not numeric (e.g. '{v[0]}'); "
                    "encode it (one-hot or ordinal) before auditing, or exclude it."
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
    )


def _label_strings(y: np.ndarray) -> np.ndarray:
    if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
        y = y.astype(np.int64)
    return np.asarray([str(v) for v in y.tolist()], dtype=object)


def _sorted_labels(y_raw: np.ndarray, y_str: np.ndarray) -> list[str]:
    uniq = sorted(set(y_str.tolist()))
    if np.issubdtype(y_raw.dtype, np.number):
        uniq.sort(key=float)  # numeric labels 0..k-1 map to class indices 0..k-1
    return uniq


def _read_columns(src: Path, spec: DataSpec, spec_path: Path) -> dict[str, np.ndarray]:
    fmt = spec.source.format
    try:
        if fmt == "npz":
            with np.load(src, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        import pandas as pd

        df = pd.read_csv(src, skipinitialspace=True) if fmt == "csv" else pd.read_parquet(src)
    except Exception as exc:  # a corrupt or wrong-format file
        raise InputError(
            f"{spec_path}: key 'source': could not read {src.name} as {fmt} ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); "
            "check source.format and the file."
        ) from None
    out = {}
    for c in df.columns:
        s = df[c]
        out[str(c)] = s.to_numpy() if s.dtype != "string" and s.dtype != "str" else s.astype(object).to_numpy()
    return out
