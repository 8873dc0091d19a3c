"""Declarative parameter constraints for attacks, with one error form (as scikit-learn's `_param_validation`)."""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Integral
from typing import Any


@dataclass(frozen=True)
class Interval:
    type: type  # Real or Integral
    low: float | None = None
    high: float | None = None
    closed: str = "both"  # both | left | right | neither

    def check(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, self.type):
            return False
        lo_ok = self.low is None or (v >= self.low if self.closed in ("both", "left") else v > self.low)
        hi_ok = self.high is None or (v <= self.high if self.closed in ("both", "right") else v < self.high)
        return lo_ok and hi_ok

    def __str__(self) -> str:
        kind = "an integer" if self.type is Integral else "a number"
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.low is None else f"{self.low:g}"
        hi = "inf" if self.high is None else f"{self.high:g}"
        return f"{kind} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    values: frozenset

    def check(self, v: Any) -> bool:
        return v in self.values

    def __str__(self) -> str:
        return "one of " + ", ".join(sorted(map(str, self.values)))


@dataclass(frozen=True)
class OptionalOf:
    inner: Any

    def check(self, v: Any) -> bool:
        return v is None or self.inner.check(v)

    def __str__(self) -> str:
        return f"null or {self.inner}"


def validate_params(component: str, constraints: dict[str, Any], params: dict[str, Any]) -> list[str]:
    """Every problem with `params` as a list of sentences (empty when valid)."""
    problems = []
    for key, value in params.items():
        if key not in constraints:
            known = ", ".join(sorted(constraints)) or "none"
            problems.append(f"'{component}' has no parameter '{key}' (parameters: {known})")
        elif not constraints[key].check(value):
            problems.append(f"'{component}' parameter '{key}' must be {constraints[key]}, got {value!r}")
    return problems


@dataclass(frozen=True)
class Text:
    def check(self, v: Any) -> bool:
        return isinstance(v, str) and bool(v)

    def __str__(self) -> str:
        return "a non-empty string"
