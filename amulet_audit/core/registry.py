"""Attacks, defenses and metrics found through entry points; built-ins register the same way a plugin does (as
pluggy's plugins do). Loading checks each plugin against the contract and names the distribution that provided it,
so a broken plugin stops the audit with one sentence naming its distribution (the CLI exits 2)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from amulet_audit.core.errors import InputError

ATTACKS_GROUP = "amulet_audit.attacks"
METRICS_GROUP = "amulet_audit.metrics"
DEFENSES_GROUP = "amulet_audit.defenses"


class RegistryError(InputError):
    """A plugin that fails to import or does not meet the contract. The message is one sentence naming the entry
    point, its distribution and what to fix; an `InputError`, so the CLI exits 2."""


@dataclass(frozen=True)
class Registered:
    """One registered component: its registry `name`, the loaded object (`obj`: an Attack or Defense subclass, or a
    MetricSpec) and the `provider` ("<distribution> <version>") recorded in results.json."""

    name: str
    obj: Any
    provider: str  # distribution name and version that provided it


def _provider(ep) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def _load(group: str) -> dict[str, Registered]:
    found: dict[str, Registered] = {}
    for ep in entry_points(group=group):
        dist = _provider(ep)
        try:
            obj = ep.load()
        except Exception as exc:  # a plugin's own bug or missing dependency: name it, do not crash the audit
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RegistryError(
                f"{group}: the plugin '{ep.name}' ({ep.value}) from {dist} failed to import "
                f"({type(exc).__name__}{': ' + first if first else ''}); fix or uninstall {dist.split(' ')[0]}."
            ) from None
        if ep.name in found:
            raise RegistryError(f"{group}: '{ep.name}' is registered twice ({found[ep.name].provider}; {dist}); "
                                "uninstall one of them.")
        found[ep.name] = Registered(ep.name, obj, dist)
    return found


def _refuse(kind: str, reg: Registered, problems: list[str]) -> None:
    if problems:
        raise RegistryError(f"{kind} '{reg.name}' from {reg.provider} does not meet the amulet-audit contract: "
                            f"{'; '.join(problems)}; fix or uninstall {reg.provider.split(' ')[0]}.")


@lru_cache(maxsize=None)
def attacks() -> dict[str, Registered]:
    """Every attack registered under the entry-point group `amulet_audit.attacks`, by name (loaded once).

    Returns
    -------
    dict of str to Registered
        `obj` is an `Attack` subclass whose `name` equals the entry-point name, whose declarations pass
        `conformance.contract_problems` and whose metrics are registered.

    Raises
    ------
    RegistryError
        When a plugin fails to import, is registered twice, or breaks the contract; the message names its
        distribution.
    """
    from amulet_audit.core.attack import Attack
    from amulet_audit.core.conformance import contract_problems

    out = _load(ATTACKS_GROUP)
    for name, reg in out.items():
        cls = reg.obj
        if not (isinstance(cls, type) and issubclass(cls, Attack)):
            _refuse("attack", reg, ["it is not an amulet_audit Attack subclass"])
        if cls.name != name:
            _refuse("attack", reg, [f"it declares name '{cls.name}'; the class name and the entry-point name must match"])
        problems = contract_problems(cls)
        missing = [m for m in cls.metrics if m not in metrics()]
        if missing:
            problems.append(f"it reports unregistered metric(s) {', '.join(missing)}")
        _refuse("attack", reg, problems)
    return out


@lru_cache(maxsize=None)
def metrics() -> dict[str, Registered]:
    """Every metric registered under `amulet_audit.metrics`, by name: `obj` is a `MetricSpec` of that name.

    Raises
    ------
    RegistryError
        As `attacks`.
    """
    from amulet_audit.core.attack import MetricSpec
    from amulet_audit.core.conformance import contract_problems

    out = _load(METRICS_GROUP)
    for name, reg in out.items():
        spec = reg.obj
        if not isinstance(spec, MetricSpec) or spec.name != name:
            _refuse("metric", reg, [f"it is not a MetricSpec named '{name}'"])
        _refuse("metric", reg, contract_problems(spec))
    return out


def metric(name: str):
    """The registered `MetricSpec` called `name` (KeyError when none is)."""
    return metrics()[name].obj


def attack_class(name: str):
    """The registered `Attack` subclass called `name` (KeyError when none is)."""
    return attacks()[name].obj


@lru_cache(maxsize=None)
def defenses() -> dict[str, Registered]:
    """Every defense registered under `amulet_audit.defenses`, by name: `obj` is a `Defense` subclass of that name
    whose declarations pass `conformance.contract_problems`.

    Raises
    ------
    RegistryError
        As `attacks`.
    """
    from amulet_audit.core.conformance import contract_problems
    from amulet_audit.core.defense import Defense

    out = _load(DEFENSES_GROUP)
    for name, reg in out.items():
        cls = reg.obj
        if not (isinstance(cls, type) and issubclass(cls, Defense)) or cls.name != name:
            _refuse("defense", reg, [f"it is not an amulet_audit Defense subclass named '{name}'"])
        _refuse("defense", reg, contract_problems(cls))
    return out


def defense_class(name: str):
    """The registered `Defense` subclass called `name` (KeyError when none is)."""
    return defenses()[name].obj
