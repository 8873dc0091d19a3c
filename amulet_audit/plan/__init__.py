"""Requirements -> deduplicated jobs: one attack run serves every requirement that reads its output."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from amulet_audit.policy.schema import Policy
from amulet_audit.risks.base import DEFAULT_ATTACK


@dataclass
class Job:
    attack: str
    params: dict[str, Any]
    requirements: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.attack}:{json.dumps(self.params, sort_keys=True, default=str)}"


@dataclass
class Plan:
    jobs: list[Job]
    job_of: dict[str, Job]  # requirement id -> the job that measures it


def build_plan(policy: Policy) -> Plan:
    jobs: dict[str, Job] = {}
    job_of: dict[str, Job] = {}
    for req in policy.requirements:
        name = req.attack.name if req.attack else DEFAULT_ATTACK[req.risk]
        job = Job(name, dict(req.attack.params) if req.attack else {})
        job = jobs.setdefault(job.key, job)
        job.requirements.append(req.id)
        job_of[req.id] = job
    return Plan(list(jobs.values()), job_of)
