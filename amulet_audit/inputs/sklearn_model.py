"""scikit-learn estimators and pipelines saved with skops (`.skops`), as a ModelHandle.

A skops file is loaded with `skops.io.load(path, trusted=...)`, never with pickle: types skops does not trust by
default are listed and refused unless the user names each with `--trust-type TYPE`. The estimator (or a Pipeline
ending in one) must be fitted, have `predict_proba` and integer classes (the data spec's output indices).

The handle's `module` is a torch.nn.Module (`EstimatorModule`) returning per-class log-probabilities, float64
(n, classes), from `predict_proba`, so every score-based attack reads it through the same path as a PyTorch model
(`ops.forward`, `ops.scores.attach`, which detects the convention `log_probabilities`). It offers scores and
trained copies, no gradients (`core.component.MODEL_KINDS["sklearn"]`). A trained copy is
`sklearn.base.clone(estimator)` fitted on the given records (`SklearnHandle.fit_copy`): the estimator's own
hyperparameters are its training recipe, so the data spec's `training` (epochs, optimizer) does not apply.

skops and scikit-learn are imported inside the functions (the optional extra `amulet-audit[sklearn]`).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from amulet_audit.core.component import MODEL_KINDS
from amulet_audit.core.errors import InputError
from amulet_audit.inputs.model import ModelHandle

FORMAT = "skops"
# Final estimators that are tree ensembles (or single trees): their reasons say "a tree ensemble has no gradients".
_TREE_KINDS = ("HistGradientBoosting", "GradientBoosting", "RandomForest", "ExtraTrees", "DecisionTree", "LGBM",
               "XGB", "CatBoost", "AdaBoost")
_LOG_FLOOR = -700.0  # log of a probability of exactly 0 (float64's smallest normal is about exp(-708))


def _torch_module_class():
    import torch

    class EstimatorModule(torch.nn.Module):
        """A fitted estimator as a module: forward(x (n, ...) float tensor) -> per-class log-probabilities (n,
        n_classes), float64, from `predict_proba` on x flattened to (n, features) (as float32 numpy, the dtype the
        audit's data arrays have). Classes the estimator never saw (a copy fitted on a subset) get probability 0,
        i.e. log-probability `_LOG_FLOOR`. Not differentiable: the input's gradient is never connected.

        Its state dict holds one buffer, `fingerprint` (32 bytes): a hash of the fitted estimator's arrays and
        structure (`fingerprint`), so `core.digest.weights_digest` names exactly which fitted estimator it is."""

        def __init__(self, estimator, n_classes: int):
            super().__init__()
            self.estimator = estimator
            self.n_classes = int(n_classes)
            self.register_buffer("fingerprint", torch.tensor(list(fingerprint(estimator)), dtype=torch.uint8))
            from amulet_audit.core.mode import set_mode

            set_mode(self, False)

        def forward(self, x):
            xn = x.detach().cpu().reshape(len(x), -1).float().numpy()
            return torch.as_tensor(log_proba(self.estimator, xn, self.n_classes))

    return EstimatorModule


_MODULE_CLASS: Any = None


def estimator_module(estimator, n_classes: int):
    """The module (see `EstimatorModule`) of a fitted `estimator` with `n_classes` output columns."""
    global _MODULE_CLASS
    if _MODULE_CLASS is None:
        _MODULE_CLASS = _torch_module_class()
    return _MODULE_CLASS(estimator, n_classes)


def log_proba(estimator, x: np.ndarray, n_classes: int) -> np.ndarray:
    """log `predict_proba(x)` as (n, n_classes) float64, column j for class index j (the estimator's `classes_`
    placed in their columns; absent classes and probabilities of 0 give `_LOG_FLOOR`), renormalised so that each
    row's exponentials sum to 1."""
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None and x.ndim == 2 and x.shape[1] == len(names):
        import pandas as pd  # fitted on a DataFrame: its columns by name (`check_features` made the order agree)

        x = pd.DataFrame(x, columns=list(names))
    p = np.asarray(estimator.predict_proba(x), dtype=np.float64)
    full = np.zeros((len(x), n_classes))
    full[:, np.asarray(estimator.classes_, dtype=np.int64)] = p
    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(full), _LOG_FLOOR)
    peak = logp.max(axis=1, keepdims=True)
    return logp - (peak + np.log(np.exp(logp - peak).sum(axis=1, keepdims=True)))


def fingerprint(estimator) -> bytes:
    """SHA-256 (32 bytes) of a fitted estimator's skops serialisation with its volatile parts removed (zip member
    names and `__id__` fields, which are Python object ids): equal for equal fitted estimators across processes."""
    from skops.io import dumps

    z = zipfile.ZipFile(io.BytesIO(dumps(estimator)))
    schema = z.read("schema.json").decode()
    for name in z.namelist():
        if name != "schema.json":
            schema = schema.replace(name, hashlib.sha256(z.read(name)).hexdigest())
    return hashlib.sha256(re.sub(r'"__id__":\s*\d+', "", schema).encode()).digest()


def describe(estimator) -> str:
    """'Pipeline(StandardScaler, HistGradientBoostingClassifier)', or the estimator's class name."""
    steps = getattr(estimator, "steps", None)
    if steps is not None:
        return f"{type(estimator).__name__}({', '.join(describe(step) for _, step in steps if step != 'passthrough')})"
    return type(estimator).__name__


def final_estimator(estimator):
    """The last step of a Pipeline (recursively), else the estimator itself."""
    steps = getattr(estimator, "steps", None)
    return final_estimator(steps[-1][1]) if steps else estimator


def is_tree_ensemble(estimator) -> bool:
    """Whether the final estimator is a tree or a tree ensemble (by its class name, `_TREE_KINDS`)."""
    return any(k in type(final_estimator(estimator)).__name__ for k in _TREE_KINDS)


def parameter_count(estimator) -> int:
    """What the fitted estimator has learned, as a count: tree nodes for tree ensembles (scikit-learn's
    HistGradientBoosting and forests, LightGBM, XGBoost), coefficients and intercepts for linear models, summed
    over a Pipeline's steps; 0 for a step whose size it cannot read (e.g. a scaler)."""
    steps = getattr(estimator, "steps", None)
    if steps is not None:
        return sum(parameter_count(s) for _, s in steps if s != "passthrough")
    est = estimator
    if hasattr(est, "_predictors"):  # HistGradientBoosting*
        return int(sum(len(p.nodes) for it in est._predictors for p in it))
    if hasattr(est, "booster_"):  # LightGBM
        return int(sum(2 * t["num_leaves"] - 1 for t in est.booster_.dump_model()["tree_info"]))
    if hasattr(est, "get_booster"):  # XGBoost
        try:
            return int(len(est.get_booster().trees_to_dataframe()))
        except Exception:
            return 0
    trees = getattr(est, "estimators_", None)
    if trees is not None:  # forests, GradientBoosting (a 2-D array of trees)
        flat = np.asarray(trees, dtype=object).ravel()
        return int(sum(getattr(getattr(t, "tree_", None), "node_count", 0) for t in flat))
    if hasattr(est, "tree_"):
        return int(est.tree_.node_count)
    size = 0
    for name in ("coef_", "intercept_"):
        if hasattr(est, name):
            size += int(np.size(getattr(est, name)))
    return size


@dataclass
class SklearnHandle(ModelHandle):
    """A fitted scikit-learn estimator or Pipeline as the audited model. `estimator` is never modified;
    `trusted_types` are the types the user trusted with --trust-type (needed again to load the file in a worker)."""

    estimator: Any = None
    trusted_types: tuple[str, ...] = ()
    n_classes: int = 2
    kind: str = "sklearn"  # the row of `core.component.MODEL_KINDS`
    output_description: str = ("the logarithm of the estimator's predict_proba; copies are sklearn clones of it "
                               "fitted on the records (its hyperparameters are its training recipe)")
    capabilities: frozenset = field(default_factory=lambda: MODEL_KINDS["sklearn"]["offers"])

    def check_features(self, feature_names: list[str], spec_path) -> None:
        """Refuse (InputError, one sentence) a data spec whose `features` are not, in order, the columns the
        estimator was fitted on (`feature_names_in_`, set when it was fitted on a DataFrame): the audit feeds the
        spec's columns in the spec's order, and another order would silently audit another function."""
        names = getattr(self.estimator, "feature_names_in_", None)
        if names is None or list(names) == list(feature_names):
            return
        names = [str(n) for n in names]
        if sorted(names) == sorted(feature_names):
            raise InputError(f"{spec_path}: key 'features' lists the columns in another order than {self.path} was "
                             f"fitted on ({', '.join(names[:8])}{', ...' if len(names) > 8 else ''}); list them in "
                             "that order.")
        missing = [n for n in names if n not in feature_names]
        extra = [n for n in feature_names if n not in names]
        raise InputError(f"{spec_path}: key 'features' does not match the columns {self.path} was fitted on "
                         f"(missing: {', '.join(missing[:8]) or 'none'}; not used by the model: "
                         f"{', '.join(extra[:8]) or 'none'}); list the model's columns, in its order.")

    @property
    def parameters(self) -> int:
        """Tree nodes, or coefficients, of the audited estimator (`parameter_count`)."""
        return parameter_count(self.estimator)

    @property
    def kind_phrase(self) -> str:
        """The model in a sentence, for reasons: 'a tree ensemble' or 'a scikit-learn estimator'."""
        return "a tree ensemble" if is_tree_ensemble(self.estimator) else "a scikit-learn estimator"

    def architecture_digest(self) -> str:
        """Identifies the estimator's class and hyperparameters (not what it learned): copies of it are clones."""
        params = json.dumps(self.estimator.get_params(deep=True), sort_keys=True, default=_param_repr)
        return hashlib.sha256(f"{self.format}|{self.architecture}|{params}".encode()).hexdigest()

    @property
    def trainable(self) -> bool:
        return True

    def fresh_copy(self, seed: int):
        """Not available: an estimator is copied unfitted with `sklearn.base.clone` and fitted by `fit_copy`.

        Raises
        ------
        TypeError
            Always (a caller that re-initialises torch modules must check `fit_copy` first)."""
        raise TypeError(f"{self.architecture}: a scikit-learn estimator has no parameters to re-initialise; its "
                        "copies are fitted clones (SklearnHandle.fit_copy)")

    def functional_copy(self, seed: int, example):
        """None: an estimator has no functional (torch.func) form."""
        return None

    def fit_copy(self, x: np.ndarray, y: np.ndarray, *, seed: int, sample_weight: np.ndarray | None = None):
        """`sklearn.base.clone(estimator)` fitted on (x (n, ...), y (n,) class indices), as an `EstimatorModule`.

        Every `random_state` parameter (the estimator's, and each Pipeline step's) is set to `seed` (mod 2**32),
        so copies with different seeds are independent draws and a seed gives the same copy. `sample_weight` (n,)
        is passed to `fit` (to the last step, `{name}__sample_weight`, for a Pipeline). Records of a single class
        give a constant predictor of that class (`DummyClassifier`), as scikit-learn's classifiers refuse them.

        Raises
        ------
        ValueError
            When `sample_weight` is given and the final estimator's `fit` takes none (one sentence)."""
        from sklearn.base import clone

        est = clone(self.estimator)
        seeded = {k: int(seed) % 2**32 for k in est.get_params(deep=True)
                  if k == "random_state" or k.endswith("__random_state")}
        if seeded:
            est.set_params(**seeded)
        kwargs: dict[str, Any] = {}
        if sample_weight is not None:
            if not takes_sample_weight(est):
                raise ValueError(f"{self.architecture}: the final estimator's fit takes no sample_weight, so a "
                                 "reweighting defense cannot train it")
            steps = getattr(est, "steps", None)
            kwargs = {f"{steps[-1][0]}__sample_weight" if steps else "sample_weight": np.asarray(sample_weight, float)}
        x2, y2 = np.asarray(x, dtype=np.float32).reshape(len(x), -1), np.asarray(y, dtype=np.int64)
        if len(np.unique(y2)) < 2:  # classifiers refuse a single class; any learner would predict it
            from sklearn.dummy import DummyClassifier

            est, kwargs = DummyClassifier(strategy="prior"), {k.rsplit("__", 1)[-1]: v for k, v in kwargs.items()}
        est.fit(x2, y2, **kwargs)
        return estimator_module(est, self.n_classes)

    def dumps(self, module) -> bytes:
        """A fitted copy (`EstimatorModule`) as skops bytes, for the model cache."""
        from skops.io import dumps

        return dumps(module.estimator)

    def loads(self, blob: bytes):
        """A cached copy from `dumps`' bytes, or None when it holds a type the user did not trust (loaded with
        skops' `trusted=`, never with pickle)."""
        from skops.io import get_untrusted_types, loads

        try:
            untrusted = get_untrusted_types(data=blob)
            if set(untrusted) - set(self.trusted_types):
                return None
            return estimator_module(loads(blob, trusted=untrusted), self.n_classes)
        except Exception:  # a corrupt cache entry is a miss
            return None


def _param_repr(value) -> str:
    return describe(value) if hasattr(value, "get_params") else repr(value)


def takes_sample_weight(estimator) -> bool:
    """Whether the final estimator's `fit` accepts `sample_weight`."""
    from sklearn.utils.validation import has_fit_parameter

    return has_fit_parameter(final_estimator(estimator), "sample_weight")


def load_skops(path: str | Path, *, trusted: tuple[str, ...] | list[str] = ()) -> SklearnHandle:
    """The fitted estimator in the skops file `path` as a SklearnHandle.

    Types skops does not trust by default (`skops.io.get_untrusted_types`) must each be named in `trusted`
    (--trust-type); they are then loaded with `skops.io.load(path, trusted=...)`.

    Raises
    ------
    InputError
        One sentence naming the file and the fix: skops is not installed; the file is no skops archive; it holds
        untrusted types not named with --trust-type (listed); the object is no fitted classifier with
        `predict_proba`; its classes are not the integer indices 0..k-1."""
    from amulet_audit.core.digest import sha256_file

    path = Path(path)
    try:
        from skops.io import get_untrusted_types, load
    except ImportError:
        raise InputError(f"{path}: reading a skops file needs skops: pip install 'amulet-audit[sklearn]' "
                         "(or pip install skops).") from None
    try:
        untrusted = get_untrusted_types(file=path)
    except Exception as exc:
        raise InputError(f"{path}: not a skops file ({_first_line(exc)}); save the estimator with skops.io.dump.") from None
    missing = [t for t in untrusted if t not in set(trusted)]
    if missing:
        flags = " ".join(f"--trust-type {t}" for t in missing)
        raise InputError(f"{path}: holds types skops does not trust by default ({', '.join(missing)}), and loading "
                         f"them can run their code; if you trust the file, name each one: {flags}.")
    try:
        estimator = load(path, trusted=list(untrusted))
    except Exception as exc:
        raise InputError(f"{path}: the skops file does not load ({_first_line(exc)}); is the library that saved it "
                         "(scikit-learn, LightGBM, XGBoost) installed here?") from None
    name = type(estimator).__name__
    if not hasattr(estimator, "predict_proba"):
        raise InputError(f"{path}: holds a {name}, which has no predict_proba; the audit needs a classifier (or a "
                         "Pipeline ending in one) that returns class probabilities.")
    classes = getattr(estimator, "classes_", None)
    if classes is None:
        raise InputError(f"{path}: the {name} is not fitted; fit it before saving it with skops.io.dump.")
    classes = np.asarray(classes)
    if classes.dtype.kind not in "iub" or classes.min() < 0:
        shown = ", ".join(map(str, classes[:4]))
        raise InputError(f"{path}: the {name} was fitted on the class values ({shown}), not on class indices "
                         "0..k-1; fit it on the indices the data spec gives (output index i is classes[i]).")
    return SklearnHandle(path, sha256_file(path), FORMAT, estimator_module(estimator, int(classes.max()) + 1),
                         describe(estimator), estimator=estimator, trusted_types=tuple(trusted),
                         n_classes=int(classes.max()) + 1, output="log_probabilities")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
