"""Declarative parameter constraints for attacks and defenses, with one error form (as scikit-learn's
`_param_validation`).

A constraint is any object with `check(value) -> bool` and a `__str__` that completes the sentence
"parameter 'x' must be ..." (the `Constraint` protocol). A component declares one per parameter in
`parameter_constraints`; `Attack.run` and `Defense.apply` validate through `check_params` before any work, so every
violation reads the same way: "'<component>' parameter '<name>' must be <allowed values>, got <value>".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral
from typing import Any, Protocol, runtime_checkable

from amulet_audit.core.errors import InputError


@runtime_checkable
class Constraint(Protocol):
    """What a parameter constraint provides: `check(value)` is True when the value is allowed, and `str()` describes
    the allowed values as the end of "must be ..." (e.g. "an integer in [1, 100]")."""

    def check(self, v: Any) -> bool: ...


class ParameterError(InputError, ValueError):
    """Parameters that violate a component's constraints. The message names the component, each parameter and its
    allowed values (one sentence per problem, joined by "; "); `problems` lists the sentences."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems) + ".")


@dataclass(frozen=True)
class Interval:
    """A finite number of `type` (`numbers.Real` or `numbers.Integral`, or `float`/`int`) between `low` and `high`
    (None: unbounded on that side), each end included or not as `closed` says ("both", "left", "right" or
    "neither"). Booleans, NaN and infinities are never allowed."""

    type: type  # Real or Integral
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # both | left | right | neither

    def check(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.type) or not math.isfinite(v):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        kind = "an integer" if issubclass(self.type, Integral) else "a number"
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of `values` (strings or numbers); a boolean matches only a boolean."""

    values: frozenset

    def check(self, v: Any) -> bool:
        # 1 == True and 0.0 == False in Python: a bool matches only a bool option, a number only a number
        try:
            return any(isinstance(v, bool) == isinstance(o, bool) and bool(v == o) for o in self.values)
        except (TypeError, ValueError):  # e.g. an array, whose comparison has no single truth value
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(sorted(map(str, self.values)))


@dataclass(frozen=True)
class OptionalOf:
    """None, or a value that `inner` (another constraint) allows."""

    inner: Any

    def check(self, v: Any) -> bool:
        return v is None or self.inner.check(v)

    def __str__(self) -> str:
        return f"null or {self.inner}"


@dataclass(frozen=True)
class Boolean:
    """True or False only: not 1, 0, 0.0 or "yes" (which `Options({True, False})` would let through as equal)."""

    def check(self, v: Any) -> bool:
        return isinstance(v, bool)

    def __str__(self) -> str:
        return "true or false"


def allows(constraint: Any, value: Any) -> bool:
    """Whether `constraint` allows `value`; a constraint whose `check` raises (e.g. comparing a string with a number)
    does not allow it."""
    try:
        return bool(constraint.check(value))
    except Exception:
        return False


def validate_params(component: str, constraints: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Every problem with `params` as a list of sentences (empty when valid).

    Parameters
    ----------
    component : str
        The registry name of the attack or defense, named in each sentence.
    constraints : dict
        Parameter name -> constraint (see `Constraint`).
    params : dict
        Parameter name -> value to check.

    Returns
    -------
    list of str
        "'<component>' parameter '<name>' must be <allowed>, got <value>" per violated constraint, and
        "'<component>' has no parameter '<name>' (parameters: ...)" per unknown name.
    """
    problems = []
    for key, value in params.items():
        if key not in constraints:
            known = ", ".join(sorted(constraints)) or "none"
            problems.append(f"'{component}' has no parameter '{key}' (parameters: {known})")
        elif not allows(constraints[key], value):
            problems.append(f"'{component}' parameter '{key}' must be {constraints[key]}, got {value!r}")
    return problems


@dataclass(frozen=True)
class Text:
    """A non-empty string."""

    def check(self, v: Any) -> bool:
        return isinstance(v, str) and bool(v)

    def __str__(self) -> str:
        return "a non-empty string"


def check_params(component: str, constraints: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """`params`, unchanged, when every value meets its constraint.

    Raises
    ------
    ParameterError
        Naming every problem (see `validate_params`); an `InputError` (the CLI exits 2) and a `ValueError`.
    """
    problems = validate_params(component, constraints, params)
    if problems:
        raise ParameterError(problems)
    return params
