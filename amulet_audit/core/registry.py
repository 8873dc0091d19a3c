"""Attacks and metrics found through entry points; built-ins register the same way a plugin does."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

ATTACKS_GROUP = "amulet_audit.attacks"
METRICS_GROUP = "amulet_audit.metrics"
DEFENSES_GROUP = "amulet_audit.defenses"


class RegistryError(Exception):
    """A plugin that does not meet the contract."""


@dataclass(frozen=True)
class Registered:
    name: str
    obj: Any
    provider: str  # distribution name and version that provided it


def _load(group: str) -> dict[str, Registered]:
    found: dict[str, Registered] = {}
    for ep in entry_points(group=group):
        obj = ep.load()
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else "unknown"
        if ep.name in found:
            raise RegistryError(f"{group}: '{ep.name}' is registered twice ({found[ep.name].provider}; {dist}).")
        found[ep.name] = Registered(ep.name, obj, dist)
    return found


@lru_cache(maxsize=None)
def attacks() -> dict[str, Registered]:
    from amulet_audit.core.attack import RISKS, Attack

    out = _load(ATTACKS_GROUP)
    for name, reg in out.items():
        cls = reg.obj
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            raise RegistryError(f"attack '{name}' ({reg.provider}) is not an amulet_audit Attack subclass.")
        if cls.name != name:
            raise RegistryError(f"attack '{name}' ({reg.provider}) declares name '{cls.name}'; they must match.")
        if cls.risk not in RISKS:
            raise RegistryError(f"attack '{name}' ({reg.provider}) declares unknown risk '{cls.risk}'.")
        missing = [m for m in cls.metrics if m not in metrics()]
        if missing:
            raise RegistryError(f"attack '{name}' ({reg.provider}) reports unregistered metric(s) {', '.join(missing)}.")
    return out


@lru_cache(maxsize=None)
def metrics() -> dict[str, Registered]:
    from amulet_audit.core.attack import MetricSpec

    out = _load(METRICS_GROUP)
    for name, reg in out.items():
        spec = reg.obj
        if not isinstance(spec, MetricSpec) or spec.name != name:
            raise RegistryError(f"metric '{name}' ({reg.provider}) is not a MetricSpec named '{name}'.")
    return out


def metric(name: str):
    return metrics()[name].obj


def attack_class(name: str):
    return attacks()[name].obj


@lru_cache(maxsize=None)
def defenses() -> dict[str, Registered]:
    from amulet_audit.core.defense import Defense
    from amulet_audit.core.attack import RISKS

    out = _load(DEFENSES_GROUP)
    for name, reg in out.items():
        cls = reg.obj
        if not (isinstance(cls, type) and issubclass(cls, Defense)) or cls.name != name:
            raise RegistryError(f"defense '{name}' ({reg.provider}) is not an amulet_audit Defense subclass named '{name}'.")
        unknown = [r for r in cls.intended if r not in RISKS]
        if unknown:
            raise RegistryError(f"defense '{name}' ({reg.provider}) declares unknown risk(s) {', '.join(unknown)}.")
    return out


def defense_class(name: str):
    return defenses()[name].obj
