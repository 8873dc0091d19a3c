"""What attacks and defenses share: parameters stored unchanged and validated when they run, declared needs, and
budgets per profile (as scikit-learn's estimators share `BaseEstimator`)."""

from __future__ import annotations

from typing import Any, ClassVar

# need -> what it means. A component declares the ones it cannot work without in `needs`; `Attack.run` and
# `Defense.apply` check them against the model and data before any work (NOT_APPLICABLE with the reason).
NEEDS: dict[str, str] = {
    "sensitive": "the data spec names a sensitive attribute (its values for the training and holdout records)",
    "positive_label": "the data spec names the favourable outcome (positive_label)",
    "scores": "the model's per-class scores (logits or probabilities), not only its top label",
    "gradients": "gradients of the model's scores with respect to its inputs",
    "trained_copies": "re-initialised copies of the model's architecture can be trained with the data spec's recipe",
}

# A budget value is a JSON scalar: a count, a fraction, or None (no cap / the recipe's own value).
BUDGET_TYPES = (int, float, type(None))


# The capability table (DESIGN.md, "Model kinds"): what each kind of model offers the audit among gradients (of
# its scores with respect to its inputs), per-class scores, predicted labels and trainable copies of its
# architecture. Attacks and defenses declare what they need (`NEEDS`); what a kind does not offer makes them
# NOT_APPLICABLE with the reason (`unmet_need`). `offers`: the capabilities; `copies`: how trained copies are made.
# A handle names its row with `kind` (default "pytorch") or declares `capabilities` itself.
MODEL_KINDS: dict[str, dict[str, Any]] = {
    "pytorch": {"title": "PyTorch module (TorchScript, torch.export, state_dict, trusted pickle)",
                "offers": frozenset({"gradients", "scores", "labels", "trained_copies"}),
                "copies": "re-initialised copies trained with the data spec's recipe"},
    "sklearn": {"title": "scikit-learn estimator or pipeline saved with skops (incl. LightGBM, XGBoost)",
                "offers": frozenset({"scores", "labels", "trained_copies"}),
                "copies": "sklearn.base.clone fitted on the same records (sample_weight where the estimator takes it)"},
    "onnx": {"title": "ONNX model run with onnxruntime",
             "offers": frozenset({"scores", "labels"}),
             "copies": "none: an ONNX graph is run as it is, never re-initialised and trained"},
    "endpoint": {"title": "prediction service (--endpoint URL)",
                 "offers": frozenset({"scores", "labels"}),
                 "copies": "none; scores or labels as its response mapping gives"},
    "label_only": {"title": "any model whose output is labels only",
                   "offers": frozenset({"labels"}),
                   "copies": "none (no scores to train a copy against)"},
}


def model_capabilities(model) -> frozenset[str]:
    """What the model offers among "scores", "gradients" and "trained_copies" (and "labels", which every model
    offers).

    A model handle may declare `capabilities` itself (a model behind an API offers no gradients and no copies).
    Otherwise its row of `MODEL_KINDS` (`kind`, default "pytorch") says, except that a model whose output
    convention (`output`, default "logits") is "labels" returns no scores and no usable gradients, so no copy of it
    can be trained either (the "label_only" row)."""
    declared = getattr(model, "capabilities", None)
    if declared is not None:
        return frozenset(declared) | {"labels"}
    offered = set(MODEL_KINDS[getattr(model, "kind", "pytorch")]["offers"])
    if getattr(model, "output", "logits") == "labels":
        offered &= MODEL_KINDS["label_only"]["offers"]
    if not getattr(model, "trainable", True):  # a handle may refuse copies for reasons of its own
        offered.discard("trained_copies")
    if not has_parameters(model):  # nothing to train (e.g. a fixed rule written as a module)
        offered.discard("trained_copies")
    return frozenset(offered)


def has_parameters(model) -> bool:
    """Whether the model's module has any parameter to train (True when it is not a module)."""
    module = getattr(model, "module", None)
    params = getattr(module, "parameters", None)
    return not callable(params) or any(True for _ in params())


_FORMAT_PHRASES = {"export": "an exported program", "torchscript": "a TorchScript model", "pickle": "a pickled module",
                   "state_dict": "a state_dict model", "onnx": "an ONNX model run with onnxruntime",
                   "endpoint": "a model behind a prediction service"}


def model_phrase(fmt: str | None) -> str:
    """A model of format `fmt` in a sentence, with its article: "an exported program", "a TorchScript model"."""
    if fmt in _FORMAT_PHRASES:
        return _FORMAT_PHRASES[fmt]
    word = f"{fmt or 'given'} model"
    return ("an " if word[0].lower() in "aeiou" else "a ") + word


def unmet_need(needs, model, data) -> str:
    """The first of `needs` (in `NEEDS` order) that `model` and `data` do not meet, as one sentence; "" when
    every need is met."""
    for need in NEEDS:
        if need not in needs:
            continue
        if need == "sensitive" and not (getattr(data, "sensitive_holdout", None) and getattr(data, "sensitive_train", None)):
            return "the data spec names no sensitive attribute"
        if need == "positive_label" and getattr(data, "positive_index", None) is None:
            return "the data spec names no positive_label (the favourable outcome)"
        if need in ("scores", "gradients", "trained_copies") and need not in model_capabilities(model):
            output = getattr(model, "output", "logits")
            why = (f"the model returns {output} only" if output == "labels"
                   else "the model has no parameters to train" if need == "trained_copies" and not has_parameters(model)
                   and getattr(model, "trainable", True)
                   else f"{model.kind_phrase} has none" if getattr(model, "kind_phrase", None)
                   else f"{model_phrase(getattr(model, 'format', None))} does not offer them")
            what = {"scores": "per-class scores (logits or probabilities)",
                    "gradients": "gradients with respect to the inputs",
                    "trained_copies": "trainable copies of its architecture"}[need]
            return f"this needs the model's {what}, and {why}"
    return ""


class Component:
    """Base of `Attack` and `Defense`. `__init__` stores keyword arguments unchanged; validation and work happen
    in the public method that runs (`Attack.run`, `Defense.apply`).

    Class attributes a component declares:

    - `name`: its registry name;
    - `defaults` and `parameter_constraints`: one default and one constraint (`amulet_audit.core.params`) per
      parameter;
    - `needs`: what it cannot work without, a subset of `NEEDS`;
    - `budgets`: work per profile, `{"quick": {...}, "standard": {...}, "thorough": {...}}`, every profile with the
      same keys and JSON-scalar values (None: no cap), read through `budget(profile, key)`.
    """

    name: ClassVar[str] = ""
    defaults: ClassVar[dict[str, Any]] = {}
    parameter_constraints: ClassVar[dict[str, Any]] = {}
    needs: ClassVar[frozenset[str]] = frozenset()
    budgets: ClassVar[dict[str, dict[str, Any]]] = {}

    def __init__(self, **params: Any) -> None:
        self.params = params

    def get_params(self) -> dict[str, Any]:
        """The defaults overridden by the parameters given to `__init__` (not validated)."""
        return {**self.defaults, **self.params}

    def validated_params(self) -> dict[str, Any]:
        """`get_params()`, checked against `parameter_constraints`.

        Raises
        ------
        amulet_audit.core.params.ParameterError
            Naming the component, every offending parameter and its allowed values.
        """
        from amulet_audit.core.params import check_params

        return check_params(self.name, self.parameter_constraints, self.get_params())

    def needs_for(self, params: dict[str, Any]) -> frozenset[str]:
        """The needs of a run with these (validated) parameters: `needs`, unless a component's needs depend on
        its parameters (e.g. extraction needs scores only when it reads probabilities)."""
        return frozenset(self.needs)

    def unmet(self, params: dict[str, Any], model, data) -> str:
        """One sentence when `model` and `data` do not meet the needs of a run with these (validated) parameters
        (`unmet_need`), followed by what the component can do instead (`instead`); "" when every need is met."""
        reason = unmet_need(self.needs_for(params), model, data)
        alternative = self.instead(params) if reason else ""
        return f"{reason}; {alternative}" if alternative else reason

    def uses_copies(self, params: dict[str, Any], model) -> bool:
        """True when a run with these (validated) parameters on `model` trains copies of the audited architecture
        with the data spec's recipe (reference models, shadow models, poisoned copies, a surrogate), so that its value
        holds only as far as those copies reproduce the audited model (`AuditResult.copy_fidelity`). Default: the
        run needs "trained_copies"."""
        return "trained_copies" in self.needs_for(params)

    def instead(self, params: dict[str, Any]) -> str:
        """What other parameters measure when the needs of these are not met (e.g. extraction from labels only);
        "" when nothing does."""
        return ""

    @classmethod
    def budget(cls, profile, key: str | None = None) -> Any:
        """The budget `key` this component declares for `profile` (a `Profile` or its name); every key of that
        profile as a dict when `key` is None.

        Raises
        ------
        KeyError
            When the component declares no budget for that profile or key.
        """
        name = getattr(profile, "name", profile)
        if name not in cls.budgets:
            raise KeyError(f"'{cls.name}' declares no budget for profile '{name}' (profiles: {', '.join(cls.budgets) or 'none'})")
        values = cls.budgets[name]
        if key is None:
            return dict(values)
        if key not in values:
            raise KeyError(f"'{cls.name}' declares no budget '{key}' (budgets: {', '.join(values) or 'none'})")
        return values[key]
