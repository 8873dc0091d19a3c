"""The named checks every attack, defense and metric must pass, built-ins and third-party plugins alike (as
scikit-learn's `check_estimator`).

`component_checks(component, inputs)` yields `(name, check)` pairs; each `check()` returns nothing and raises
`AssertionError` with a sentence naming the violation. `contract_problems(component)` is the static part (no model
needed) that the registry applies to every plugin when it loads. A plugin author runs the same checks with
`amulet_audit.testing` (`check_component`, `parametrize_conformance`), which supplies a tiny model and data set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from amulet_audit.core.attack import PROFILES, RISKS, Attack, AttackContext, AttackResult, Measurement, MetricSpec
from amulet_audit.core.component import BUDGET_TYPES, NEEDS, Component
from amulet_audit.core.defense import Defense, DefenseContext, DefenseNotApplicable, DefenseOutcome
from amulet_audit.core.params import ParameterError, allows, validate_params

METRIC_KINDS = ("rate", "statistic")

Check = Callable[[], None]


# --- static contract (no model needed) ----------------------------------------------------------------------------

def contract_problems(component: Any) -> list[str]:
    """Every way `component` (an Attack or Defense subclass, or a MetricSpec) breaks the declared contract, as
    sentences naming it; empty when it meets it. Reads only declarations: nothing is run."""
    if isinstance(component, MetricSpec):
        return _metric_problems(component)
    if not (isinstance(component, type) and issubclass(component, (Attack, Defense))):
        return [f"{component!r} is neither an Attack nor a Defense subclass nor a MetricSpec"]
    cls = component
    label = f"{'attack' if issubclass(cls, Attack) else 'defense'} '{cls.name or cls.__name__}'"
    out = []
    if not isinstance(cls.name, str) or not cls.name:
        out.append(f"{label} declares no name")
    if issubclass(cls, Attack):
        if cls.run is not Attack.run:
            out.append(f"{label} overrides run(); implement _run() so that parameters and needs are checked first")
        if cls._run is Attack._run:
            out.append(f"{label} does not implement _run()")
        if cls.risk not in RISKS:
            out.append(f"{label} declares unknown risk '{cls.risk}' (risks: {', '.join(RISKS)})")
        if not cls.metrics or not all(isinstance(m, str) for m in cls.metrics):
            out.append(f"{label} declares no metrics (a tuple of registered metric names)")
    else:
        if cls.apply is not Defense.apply:
            out.append(f"{label} overrides apply(); implement fit() or _apply() so that parameters and needs are "
                       "checked first")
        if cls.fit is Defense.fit and cls._apply is Defense._apply:
            out.append(f"{label} implements neither fit() nor _apply()")
        unknown = [r for r in cls.intended if r not in RISKS]
        if unknown or not cls.intended:
            out.append(f"{label} declares unknown or no intended risk(s) {', '.join(unknown)}".rstrip())
    no_check = [name for name, c in cls.parameter_constraints.items() if not callable(getattr(c, "check", None))]
    out += [f"{label}: the constraint of '{name}' has no check(value) method" for name in no_check]
    if set(cls.defaults) != set(cls.parameter_constraints):
        odd = sorted(set(cls.defaults) ^ set(cls.parameter_constraints))
        out.append(f"{label}: every parameter needs a default and a constraint ({', '.join(odd)} has only one)")
    elif not no_check:
        out += [f"{label} default: {p}" for p in validate_params(cls.name, cls.parameter_constraints, dict(cls.defaults))]
    unknown_needs = sorted(set(cls.needs) - set(NEEDS))
    if unknown_needs:
        out.append(f"{label} declares unknown need(s) {', '.join(unknown_needs)} (needs: {', '.join(NEEDS)})")
    out += _budget_problems(cls, label)
    return out


def _metric_problems(spec: MetricSpec) -> list[str]:
    label = f"metric '{spec.name}'"
    out = []
    if not isinstance(spec.name, str) or not spec.name:
        out.append("a metric declares no name")
    if not isinstance(spec.description, str) or not spec.description.strip():
        out.append(f"{label} has no description")
    if not isinstance(spec.higher_is_worse, bool):
        out.append(f"{label}: higher_is_worse must be true or false")
    if spec.kind not in METRIC_KINDS:
        out.append(f"{label} declares kind '{spec.kind}' (kinds: {', '.join(METRIC_KINDS)})")
    if not isinstance(spec.min_n, int) or isinstance(spec.min_n, bool) or spec.min_n < 0:
        out.append(f"{label}: min_n must be a count of at least 0")
    return out


def _budget_problems(cls: type[Component], label: str) -> list[str]:
    budgets = cls.budgets
    if not budgets:
        return []
    if not isinstance(budgets, dict) or set(budgets) != set(PROFILES):
        return [f"{label} declares budgets for {sorted(budgets) if isinstance(budgets, dict) else budgets!r}; "
                f"budgets need one dict per profile: {', '.join(PROFILES)}"]
    keys = {name: set(v) if isinstance(v, dict) else None for name, v in budgets.items()}
    out = []
    if any(k is None for k in keys.values()) or len({frozenset(k) for k in keys.values()}) != 1:
        out.append(f"{label}: every profile's budget must be a dict with the same keys ({keys})")
        return out
    for name, values in budgets.items():
        for key, v in values.items():
            if isinstance(v, bool) or not isinstance(v, BUDGET_TYPES):
                out.append(f"{label}: budget '{key}' of profile '{name}' must be a number or null, got {v!r}")
    return out


# --- digests and serialisation -----------------------------------------------------------------------------------

def _digest_model(module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _digest_data(data) -> str:
    h = hashlib.sha256()
    for arr in (data.x_train, data.y_train, data.x_holdout, data.y_holdout, *data.sensitive_train.values(),
                *data.sensitive_holdout.values()):
        h.update(np.ascontiguousarray(arr).tobytes() if arr.dtype != object else "|".join(map(str, arr)).encode())
    return h.hexdigest()


def _as_json(value: Any) -> str:
    """`value` as canonical JSON; raises (TypeError, ValueError) when it is not serialisable or holds NaN."""
    return json.dumps(value, sort_keys=True, allow_nan=False)


def _attack_json(result: AttackResult) -> str:
    return _as_json({
        "metrics": {k: [m.value, list(m.ci) if m.ci else None, m.n, m.reason] for k, m in result.metrics.items()},
        "details": result.details,
        "not_applicable": result.not_applicable,
    })


# --- the inputs a component lacks, one need at a time ------------------------------------------------------------

def without(need: str, model, data) -> tuple[Any, Any]:
    """Copies of `model` and `data` that do not offer `need` (one of `NEEDS`); the originals are untouched."""
    from amulet_audit.core.component import model_capabilities

    if need == "sensitive":
        return model, dataclasses.replace(data, sensitive_train={}, sensitive_holdout={})
    if need == "positive_label":
        return model, dataclasses.replace(data, spec=data.spec.model_copy(update={"positive_label": None}))
    if need in ("scores", "gradients"):
        # a label-only model: the output convention that offers neither
        reduced = dataclasses.replace(model)
        reduced.output = "labels"
        return reduced, data
    reduced = dataclasses.replace(model)
    reduced.capabilities = model_capabilities(model) - {need}
    return reduced, data


# --- the checks ----------------------------------------------------------------------------------------------------

class _Runs:
    """The two runs with default parameters (same seed) that several checks read, made once on first use."""

    def __init__(self, component, inputs, run: Callable):
        self.component, self.inputs, self.run = component, inputs, run
        self._done: dict[str, Any] | None = None

    def get(self) -> dict[str, Any]:
        if self._done is None:
            model, data = self.inputs()
            before = (_digest_model(model.module), _digest_data(data))
            first = self.run(self.component(), model, data)
            second = self.run(self.component(), model, data)
            after = (_digest_model(model.module), _digest_data(data))
            self._done = {"first": first, "second": second, "before": before, "after": after}
        return self._done


def _attack_run(attack: Attack, model, data) -> AttackResult:
    return attack.run(AttackContext(model=model, data=data, seed=0, profile=PROFILES["quick"]))


def _defense_run(defense: Defense, model, data) -> DefenseOutcome:
    return defense.apply(DefenseContext(model=model, data=data, seed=0, profile=PROFILES["quick"]))


def _lazy(inputs) -> Callable[[], tuple[Any, Any]]:
    if callable(inputs):
        memo: list = []

        def get():
            if not memo:
                memo.append(inputs())
            return memo[0]

        return get
    return lambda: inputs


def component_checks(component: Any, inputs: Any = None) -> Iterator[tuple[str, Check]]:
    """The named conformance checks of an attack or defense class or a metric spec.

    Parameters
    ----------
    component : type or MetricSpec
        An `Attack` or `Defense` subclass, or a `MetricSpec`.
    inputs : (model, data) or callable returning it
        A ModelHandle and AuditData to run on (a callable is called once, on the first check that runs
        something). `amulet_audit.testing.tiny_inputs` gives small ones. Not needed for a metric.

    Yields
    ------
    (str, callable)
        A check's name and the check; calling it raises AssertionError naming the violation. Checks that run
        the component share its two runs (default parameters, seed 0, the quick profile): the first such check
        pays for them.
    """
    yield "contract_declared", lambda: _assert_no(contract_problems(component))
    if isinstance(component, MetricSpec):
        yield "metric_reported_by_a_registered_attack", lambda: _check_metric_reported(component)
        return
    get = _lazy(inputs)
    is_attack = issubclass(component, Attack)
    runs = _Runs(component, get, _attack_run if is_attack else _defense_run)
    yield "params_stored_unchanged", lambda: _check_params_stored(component)
    yield "get_params_round_trip", lambda: _check_round_trip(component)
    yield "defaults_valid", lambda: _assert_no(
        validate_params(component.name, component.parameter_constraints, dict(component.defaults)))
    yield "invalid_params_refused", lambda: _check_invalid_refused(component, get, runs.run)
    yield "budgets_declared", lambda: _assert_no(_budget_problems(component, component.name))
    yield "needs_known", lambda: _assert_no([n for n in component.needs if n not in NEEDS])
    if is_attack:
        yield "metrics_reported", lambda: _check_metrics_reported(component, runs.get()["first"])
        yield "measurements_valid", lambda: _check_measurements(runs.get()["first"])
        yield "result_json_serialisable", lambda: _attack_json(runs.get()["first"])
        yield "same_seed_same_result", lambda: _check_same(_attack_json(runs.get()["first"]),
                                                           _attack_json(runs.get()["second"]))
    else:
        yield "outcome_valid", lambda: _check_outcome(runs.get()["first"], get)
        yield "evidence_json_serialisable", lambda: _as_json(runs.get()["first"].details)
        yield "same_seed_same_result", lambda: _check_same(
            (runs.get()["first"].model.sha256, _as_json(runs.get()["first"].details)),
            (runs.get()["second"].model.sha256, _as_json(runs.get()["second"].details)))
    yield "model_and_data_unchanged", lambda: _check_unchanged(runs.get())
    yield "needs_honoured", lambda: _check_needs(component, get, runs.run)


def _assert_no(problems: list[str]) -> None:
    assert not problems, "; ".join(problems)


def _check_metric_reported(spec: MetricSpec) -> None:
    from amulet_audit.core import registry

    users = [name for name, reg in registry.attacks().items() if spec.name in reg.obj.metrics]
    assert users, f"metric '{spec.name}' is reported by no registered attack"


def _check_params_stored(cls) -> None:
    params = {"probe": object()}
    obj = cls(**params)
    assert obj.params == params and obj.params["probe"] is params["probe"], \
        "__init__ must store keyword arguments unchanged (validation belongs in run/apply)"


def _check_round_trip(cls) -> None:
    params = cls().get_params()
    assert params == dict(cls.defaults), "get_params() of a default instance must equal the declared defaults"
    assert cls(**params).get_params() == params, "cls(**get_params()).get_params() must give the same parameters"


def _check_invalid_refused(cls, get, run) -> None:
    """An unknown parameter and a value no constraint allows are refused before any work, naming the parameter
    and the component."""
    model, data = get()
    probe = object()
    bad = [("no_such_parameter", 1)] + [(name, probe) for name, c in cls.parameter_constraints.items()
                                        if not allows(c, probe)]
    for name, value in bad:
        try:
            run(cls(**{name: value}), model, data)
        except ParameterError as exc:
            msg = str(exc)
            assert f"'{cls.name}'" in msg and f"'{name}'" in msg, f"the error does not name '{cls.name}' and '{name}': {msg}"
        except Exception as exc:
            raise AssertionError(f"{name}={value!r} raised {type(exc).__name__} instead of ParameterError; run/apply "
                                 "must validate parameters first") from None
        else:
            raise AssertionError(f"{name}={value!r} was accepted; run/apply must validate parameters first")


def _check_metrics_reported(cls, result) -> None:
    assert isinstance(result, AttackResult), f"run() returned {type(result).__name__}, not AttackResult"
    if result.not_applicable:
        assert not result.metrics, "a not-applicable result carries no metrics"
        return
    assert set(result.metrics) == set(cls.metrics), f"reported {sorted(result.metrics)}, declared {list(cls.metrics)}"


def _check_measurements(result: AttackResult) -> None:
    """Values finite or None and inside their interval; a metric of kind 'rate' carries the exact binomial interval
    of round(value * n) out of n (what the kind promises); one of kind 'statistic' (e.g. TPR at a fixed FPR, whose
    threshold is itself estimated) does not record a binomial interval, which would ignore part of its variance."""
    from amulet_audit.core import registry
    from amulet_audit.core.stats import binomial_ci

    for name, m in result.metrics.items():
        assert isinstance(m, Measurement), f"{name}: not a Measurement"
        assert m.value is None or np.isfinite(m.value), f"{name}: value must be finite or None"
        assert m.ci is None or (m.ci[0] <= m.value + 1e-9 and m.value <= m.ci[1] + 1e-9), f"{name}: value outside its interval"
        spec = registry.metrics()[name].obj if name in registry.metrics() else None
        if spec is not None and spec.kind == "rate" and m.value is not None and m.n > 0:
            k = round(m.value * m.n)
            assert abs(k / m.n - m.value) < 1e-9, f"{name}: a rate must be k/n of its n={m.n} records, got {m.value}"
            assert m.ci is not None and np.allclose(m.ci, binomial_ci(k, m.n, 0.95)), \
                f"{name}: a metric of kind 'rate' needs the exact binomial interval of {k} out of {m.n}"
            method = getattr(m, "ci_method", "")
            assert not method or "binomial" in method, f"{name}: a metric of kind 'rate' records its interval as {method!r}"
        elif spec is not None and spec.kind == "statistic":
            method = getattr(m, "ci_method", "")
            assert "binomial" not in method, \
                f"{name}: a metric of kind 'statistic' records a binomial interval ({method!r}), as if k of n records"


def _check_same(a, b) -> None:
    assert a == b, "two runs with the same seed gave different results"


def _check_unchanged(runs: dict) -> None:
    assert runs["after"][0] == runs["before"][0], "the audited model's weights changed"
    assert runs["after"][1] == runs["before"][1], "the audit data changed"


def _check_outcome(outcome, get) -> None:
    model, _ = get()
    assert isinstance(outcome, DefenseOutcome), f"apply() returned {type(outcome).__name__}, not DefenseOutcome"
    assert outcome.model is not model and outcome.model.module is not model.module, \
        "the defended model must be a new handle and module, never the audited one"
    assert outcome.model.sha256 != model.sha256, "the defended model's sha256 must name its own weights"


def _check_needs(cls, get, run) -> None:
    """For each declared need: on inputs that lack it, the attack is NOT_APPLICABLE with one sentence (no
    metrics), the defense raises DefenseNotApplicable; nothing is trained first."""
    model, data = get()
    for need in sorted(cls.needs):
        reduced_model, reduced_data = without(need, model, data)
        try:
            out = run(cls(), reduced_model, reduced_data)
        except DefenseNotApplicable as exc:
            assert str(exc).strip(), f"without {need}: DefenseNotApplicable must say why"
            continue
        if issubclass(cls, Defense):
            raise AssertionError(f"without {need} the defense applied; it must raise DefenseNotApplicable")
        assert out.not_applicable and not out.metrics, f"without {need} the attack ran; it must be NOT_APPLICABLE"
