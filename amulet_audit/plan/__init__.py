"""Requirements -> deduplicated jobs: one attack run serves every requirement that reads its output."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from amulet_audit.policy.schema import Policy
from amulet_audit.core.attack import DEFAULT_ATTACK


@dataclass
class Job:
    attack: str
    params: dict[str, Any]
    requirements: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.attack}:{json.dumps(self.params, sort_keys=True, default=str)}"


@dataclass
class DefenseJob:
    name: str
    params: dict[str, Any]
    # a combination of defenses trained together (`core.defense.Combination`): its parts, each also applied alone;
    # `name` joins theirs with "+"
    parts: list["DefenseJob"] | None = None


@dataclass
class Plan:
    jobs: list[Job]
    job_of: dict[str, Job]  # requirement id -> the job that measures it
    defenses: list[DefenseJob] = field(default_factory=list)  # each: a defended model, evaluated on every job


def _defense_jobs(policy: Policy) -> list[DefenseJob]:
    """The policy's defenses, with parameters a defense takes from the policy's own requirements filled in
    (declared by the defense as `policy_params`, e.g. adversarial training at the policy's evasion budget), then
    its combinations (`interactions.combinations`). Each part of a combination is also applied alone, so the
    combination can be compared with it: a part the policy does not list among `defenses` is added there. A part
    named without parameters is the defense `defenses` lists under that name (when it lists one)."""
    if not policy.interactions:
        return []
    out = [_filled(ref, policy) for ref in policy.interactions.refs()]
    combos = []
    for raw, refs in zip(policy.interactions.combinations, policy.interactions.combination_refs()):
        # a defense named bare in a combination is the one `defenses` lists under that name, with its parameters
        parts = [_same(out, ref.name) if isinstance(given, str) and _same(out, ref.name) else _filled(ref, policy)
                 for given, ref in zip(raw, refs)]
        out += [p for p in parts if p not in out]
        combos.append(DefenseJob("+".join(p.name for p in parts), {}, parts))
    return out + combos


def _same(jobs: list[DefenseJob], name: str) -> DefenseJob | None:
    """The one job of `jobs` named `name`, or None (none, or several with other parameters)."""
    same = [j for j in jobs if j.name == name]
    return same[0] if len(same) == 1 else None


def _filled(ref, policy: Policy) -> DefenseJob:
    from amulet_audit.core import registry

    params = dict(ref.params)
    cls = registry.defense_class(ref.name)
    for param, (risk, key) in getattr(cls, "policy_params", {}).items():
        if param in params:
            continue
        for req in policy.requirements:
            if req.risk == risk and req.attack is not None and key in req.attack.params:
                params[param] = req.attack.params[key]
                break
    return DefenseJob(ref.name, params)


def build_plan(policy: Policy) -> Plan:
    jobs: dict[str, Job] = {}
    job_of: dict[str, Job] = {}
    for req in policy.requirements:
        name = req.attack.name if req.attack else DEFAULT_ATTACK[req.risk]
        job = Job(name, dict(req.attack.params) if req.attack else {})
        job = jobs.setdefault(job.key, job)
        job.requirements.append(req.id)
        job_of[req.id] = job
    return Plan(list(jobs.values()), job_of, _defense_jobs(policy))
