"""Loading policies: bundled-name lookup, YAML with line numbers, `extends` merged by requirement id,
and checks of every registry name the policy uses."""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from amulet_audit.core.errors import InputError
from amulet_audit.policy.schema import Policy
from amulet_audit.core.yamlio import describe_validation_error, line_of, load_yaml


@dataclass
class LoadedPolicy:
    policy: Policy
    path: Path
    sha256: str  # over the policy file and every file it extends, in order
    chain: list[Path]


def bundled_policies() -> dict[str, Path]:
    """Bundled policy file stem -> path."""
    from amulet_audit.core.resources import policies_dir

    return {p.stem: p for p in sorted(policies_dir().glob("*.yaml"))}


def resolve_policy_path(ref: str, relative_to: Path | None = None) -> Path:
    """A path, or the name of a bundled policy (`eu_ai_act`, `eu_ai_act.yaml`, or its id `eu-ai-act`)."""
    candidate = Path(ref)
    if relative_to is not None and not candidate.is_absolute():
        near = relative_to / candidate
        if near.is_file():
            return near
    if candidate.is_file():
        return candidate
    bundled = bundled_policies()
    stem = candidate.name.removesuffix(".yaml").removesuffix(".yml")
    for key in (stem, stem.replace("-", "_")):
        if key in bundled and (candidate.parent == Path(".") or not candidate.exists()):
            return bundled[key]
    close = difflib.get_close_matches(stem, list(bundled), n=1)
    hint = f"did you mean the bundled '{close[0]}'?" if close else f"bundled policies: {', '.join(bundled)}."
    raise InputError(f"{ref}: policy file not found and not a bundled policy name; {hint}")


def load_policy(ref: str) -> LoadedPolicy:
    """Load, merge (`extends`) and validate a policy; every problem is one InputError sentence."""
    path = resolve_policy_path(ref)
    raw, node, chain = _load_merged(path, [])
    try:
        policy = Policy.model_validate(raw)
    except ValidationError as exc:
        raise InputError(describe_validation_error(path, node, exc, "see the policy format in DESIGN.md.")) from None
    digest = hashlib.sha256()
    for p in chain:
        digest.update(p.read_bytes())
    problems = check_names(policy)
    if problems:
        loc, msg = problems[0]
        line = line_of(node, loc)
        where = f"line {line}: " if line else ""
        more = f" ({len(problems) - 1} more problem(s) after fixing this one)" if len(problems) > 1 else ""
        end = "" if (msg + more).endswith(("?", ".")) else "."
        raise InputError(f"{path}: {where}{msg}{more}{end}")
    return LoadedPolicy(policy, path, digest.hexdigest(), chain)


def _load_merged(path: Path, seen: list[Path]) -> tuple[dict, Any, list[Path]]:
    resolved = path.resolve()
    if resolved in seen:
        cycle = " -> ".join(p.name for p in seen + [resolved])
        raise InputError(f"{path}: key 'extends': policies extend each other in a cycle ({cycle}); remove one 'extends'.")
    raw, node = load_yaml(path, "policy")
    if not isinstance(raw, dict):
        raise InputError(f"{path}: a policy is a YAML mapping with keys policy, title, requirements; see DESIGN.md.")
    parent_ref = raw.get("extends")
    if not parent_ref:
        return raw, node, [resolved]
    if not isinstance(parent_ref, str):
        raise InputError(f"{path}: line {line_of(node, ('extends',))}: key 'extends' must name one policy (a path or bundled name).")
    try:
        parent_path = resolve_policy_path(parent_ref, relative_to=path.parent)
    except InputError as exc:
        raise InputError(f"{path}: line {line_of(node, ('extends',))}: key 'extends': {exc}") from None
    parent, _, chain = _load_merged(parent_path, seen + [resolved])
    return merge_policies(parent, raw), node, chain + [resolved]


def merge_policies(parent: dict, child: dict) -> dict:
    """Child keys override the parent's; requirements merge by id (a child entry deep-merges into the
    parent's entry of the same id, new ids are appended in the child's order)."""
    merged = {k: v for k, v in parent.items() if k != "extends"}
    for key, value in child.items():
        if key == "requirements":
            continue
        merged[key] = value
    merged["extends"] = child.get("extends")
    reqs = [dict(r) if isinstance(r, dict) else r for r in parent.get("requirements") or []]
    index = {r.get("id"): i for i, r in enumerate(reqs) if isinstance(r, dict)}
    for r in child.get("requirements") or []:
        if isinstance(r, dict) and r.get("id") in index:
            reqs[index[r["id"]]] = _deep_merge(reqs[index[r["id"]]], r)
        else:
            reqs.append(r)
    merged["requirements"] = reqs
    return merged


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if k == "threshold" and isinstance(v, dict):
            out[k] = v  # min/max replace each other: never keep both
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sorted(known))}"


def check_names(policy: Policy) -> list[tuple[tuple, str]]:
    """Registry names (risk, attack, metric, attack parameters) the policy uses; (location, message) per problem."""
    from amulet_audit.core import registry
    from amulet_audit.core.attack import DEFAULT_ATTACK, RISKS
    from amulet_audit.core.params import validate_params

    attacks = registry.attacks()
    problems: list[tuple[tuple, str]] = []
    for i, req in enumerate(policy.requirements):
        loc = ("requirements", i)
        if req.risk not in RISKS:
            problems.append((loc + ("risk",), f"requirement '{req.id}': unknown risk '{req.risk}'; {_suggest(req.risk, list(RISKS))}"))
            continue
        attack_name = req.attack.name if req.attack else DEFAULT_ATTACK.get(req.risk)
        if attack_name is None:
            problems.append((loc + ("risk",), f"requirement '{req.id}': risk '{req.risk}' has no attack in this version of amulet-audit; "
                             "remove the requirement or name an installed attack plugin"))
            continue
        if attack_name not in attacks:
            problems.append((loc + ("attack", "name"), f"requirement '{req.id}': unknown attack '{attack_name}'; {_suggest(attack_name, list(attacks))}"))
            continue
        cls = attacks[attack_name].obj
        if cls.risk != req.risk:
            problems.append((loc + ("attack", "name"), f"requirement '{req.id}': attack '{attack_name}' measures {cls.risk}, not {req.risk}"))
            continue
        if req.metric not in cls.metrics:
            problems.append((loc + ("metric",), f"requirement '{req.id}': attack '{attack_name}' does not report metric '{req.metric}'; "
                             f"{_suggest(req.metric, list(cls.metrics))}"))
        for msg in validate_params(attack_name, cls.parameter_constraints, req.attack.params if req.attack else {}):
            problems.append((loc + ("attack", "params"), f"requirement '{req.id}': {msg}"))
    if policy.interactions is not None:
        known_defenses = list(registry.defenses())
        for j, ref in enumerate(policy.interactions.refs()):
            name = ref.name
            if name not in known_defenses:
                known = ", ".join(known_defenses) if known_defenses else "none are installed in this version"
                problems.append((("interactions", "defenses", j), f"interactions: unknown defense '{name}' (known defenses: {known})"))
                continue
            cls = registry.defenses()[name].obj
            for msg in validate_params(name, cls.parameter_constraints, ref.params):
                problems.append((("interactions", "defenses", j), f"interactions: {msg}"))
        for j, combo in enumerate(policy.interactions.combination_refs()):
            problems += [(("interactions", "combinations", j), f"interactions: combination {j + 1}: {msg}")
                         for msg in _combination_problems(combo, known_defenses)]
    return problems


def _combination_problems(combo, known: list[str]) -> list[str]:
    """What stops these defenses (DefenseRefs) being trained together in one procedure: unknown names, bad
    parameters, a defense that cannot be combined, two that act on the same stage of training (core.defense.STAGES)."""
    from amulet_audit.core import registry
    from amulet_audit.core.defense import STAGES
    from amulet_audit.core.params import validate_params

    out, stages = [], {}
    for ref in combo:
        if ref.name not in known:
            out.append(f"unknown defense '{ref.name}'; {_suggest(ref.name, known)}")
            continue
        cls = registry.defenses()[ref.name].obj
        out += validate_params(ref.name, cls.parameter_constraints, ref.params)
        if cls.stage not in STAGES:
            out.append(f"{ref.name} cannot be combined with other defenses; leave it out of the combination")
        elif cls.stage in stages:
            out.append(f"{stages[cls.stage]} and {ref.name} both act on the {cls.stage} of training and cannot be "
                       "combined in one procedure; list them as separate defenses")
        else:
            stages[cls.stage] = ref.name
    return out
