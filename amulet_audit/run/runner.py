"""The local runner: executes the plan's jobs on the audited model and judges every requirement."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

from amulet_audit import __version__, registry
from amulet_audit.inputs.data import AuditData
from amulet_audit.inputs.model import ModelHandle
from amulet_audit.plan import build_plan
from amulet_audit.policy.load import LoadedPolicy
from amulet_audit.results.model import (
    AuditResult, DataInfo, ModelInfo, PolicyInfo, RequirementResult, Threshold, ToolInfo,
)
from amulet_audit.results.verdict import judge, overall
from amulet_audit.risks.base import AttackContext, AttackResult, Profile
from amulet_audit.run.environment import environment

# progress(job_label, fraction_done_of_that_job); the CLI turns it into progress bars.
Progress = Callable[[str, float], None]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_audit(model: ModelHandle, data: AuditData, loaded: LoadedPolicy, *, seed: int, profile: Profile,
              confidence: float = 0.95, progress: Progress | None = None, cache=None) -> AuditResult:
    """Run every job of the policy's plan on `model` and judge each requirement. `cache`: a ModelCache for
    trained copies (reference, poisoned, defended models), or None to train them every time."""
    import torch

    started = _now()
    t0 = time.perf_counter()
    policy = loaded.policy
    plan = build_plan(policy)
    outputs: dict[str, AttackResult] = {}
    timings: dict[str, float] = {}
    for job in plan.jobs:
        label = f"{job.attack} ({', '.join(job.requirements)})"
        cls = registry.attack_class(job.attack)
        torch.manual_seed(seed)
        ctx = AttackContext(model=model, data=data, seed=seed, profile=profile, confidence=confidence,
                            progress=(lambda f, label=label: progress(label, f)) if progress else None, cache=cache)
        t = time.perf_counter()
        attack = cls(**job.params)
        outputs[job.key] = attack.run(ctx)
        timings[f"attack:{job.key}"] = round(time.perf_counter() - t, 3)
        if progress:
            progress(label, 1.0)

    rows = []
    for req in policy.requirements:
        job = plan.job_of[req.id]
        out = outputs[job.key]
        cls = registry.attack_class(job.attack)
        params = cls(**job.params).get_params()
        threshold = Threshold(op=req.threshold.op, value=req.threshold.value)
        if out.not_applicable or req.metric not in out.metrics:
            value, ci, n, reason = None, None, 0, out.not_applicable or f"{job.attack} did not report {req.metric}"
        else:
            m = out.metrics[req.metric]
            value, ci, n, reason = m.value, m.ci, m.n, m.reason
        verdict, why = judge(value, ci, threshold.op, threshold.value, reason)
        rows.append(RequirementResult(
            id=req.id, title=req.title, risk=req.risk, attack=job.attack, metric=req.metric,
            value=value, ci=list(ci) if ci is not None else None, n=n, threshold=threshold, verdict=verdict,
            reason=why, cite=req.cite, severity=req.severity, params=params, details=out.details,
        ))
    timings["total"] = round(time.perf_counter() - t0, 3)
    spec = data.spec
    return AuditResult(
        tool=ToolInfo(version=__version__),
        verdict=overall([r.verdict for r in rows]),
        model=ModelInfo(path=str(model.path), sha256=model.sha256, format=model.format, parameters=model.parameters,
                        architecture=model.architecture, warnings=model.warnings),
        data=DataInfo(path=str(data.spec_path), sha256=data.sha256, name=spec.name, files=data.files,
                      n_train=len(data.y_train), n_holdout=len(data.y_holdout), n_features=data.n_features,
                      classes=data.classes, positive_label=None if spec.positive_label is None else str(spec.positive_label),
                      sensitive=list(spec.sensitive)),
        policy=PolicyInfo(id=policy.policy, sha256=loaded.sha256, title=policy.title, path=str(loaded.path),
                          regulation=policy.regulation.model_dump(mode="json") if policy.regulation else {}),
        requirements=rows,
        seed=seed,
        profile=profile.name,
        confidence=confidence,
        environment={**environment(), "plugins": {job.attack: registry.attacks()[job.attack].provider for job in plan.jobs}},
        started_at=started,
        finished_at=_now(),
        timings=timings,
    )
