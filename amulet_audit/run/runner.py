"""The runner: the baseline evaluation and one unit per defense, run by an executor, then verdicts and the
interaction matrix. A unit is plain data (paths and settings), so it can run in another process."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amulet_audit import __version__
from amulet_audit.core import registry
from amulet_audit.inputs.data import AuditData
from amulet_audit.inputs.model import ModelHandle
from amulet_audit.plan import DefenseJob, Plan, build_plan
from amulet_audit.policy.load import LoadedPolicy
from amulet_audit.results.model import (
    AuditResult, DataInfo, DefenseResult, MetricInfo, ModelInfo, PolicyInfo, RequirementResult, Run, Threshold, ToolInfo,
)
from amulet_audit.results.verdict import judge, overall
from amulet_audit.core.attack import PROFILES, AttackContext, AttackResult, PairedSample, Profile
from amulet_audit.run.environment import environment
from amulet_audit.run.executor import LocalExecutor
from amulet_audit.run.interactions import FDR, compare, flag

# progress(label, fraction_done); the CLI turns it into progress bars.
Progress = Callable[[str, float], None]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Inputs:
    """Where the audit's inputs are and how they were loaded: enough for another process to load them again."""

    model_path: str
    model_format: str
    architecture: str
    data_path: str
    policy_path: str
    seed: int
    profile: str
    confidence: float
    cache_root: str | None


@dataclass(frozen=True)
class Unit:
    inputs: Inputs
    defense: DefenseJob | None = None  # None: the baseline evaluation of the audited model
    scope: str = ""  # prefix of this unit's run ids: "" for the baseline, "<defense>/" for a defended model


@dataclass
class UnitResult:
    requirements: list[RequirementResult]
    runs: list[Run] = field(default_factory=list)
    defense: DefenseResult | None = None
    # requirement id -> the per-record sample behind its value, for paired comparisons (not written out)
    paired: dict[str, PairedSample] = field(default_factory=dict)


# Inputs already loaded in this process (the CLI's, or a worker's after its first unit).
_LOADED: dict[Inputs, tuple[ModelHandle, AuditData, LoadedPolicy]] = {}


def _inputs(inputs: Inputs) -> tuple[ModelHandle, AuditData, LoadedPolicy]:
    if inputs not in _LOADED:
        from amulet_audit.inputs.data import load_data
        from amulet_audit.inputs.model import load_model
        from amulet_audit.policy import load_policy

        from amulet_audit.ops.scores import attach

        model = load_model(inputs.model_path, arch=inputs.architecture if inputs.model_format == "state_dict" else None,
                           trust_pickle=inputs.model_format == "pickle")
        data = load_data(inputs.data_path)
        _LOADED[inputs] = (attach(model, data), data, load_policy(inputs.policy_path))
    return _LOADED[inputs]


def _cache(inputs: Inputs):
    from amulet_audit.training.cache import ModelCache

    return ModelCache(Path(inputs.cache_root) if inputs.cache_root else None)


def evaluate(model: ModelHandle, data: AuditData, loaded: LoadedPolicy, plan: Plan, inputs: Inputs, *,
             defense: str | None = None, scope: str = "", progress: Progress | None = None) -> UnitResult:
    """Run every attack job of the plan on `model` (the audited one, or the copy `defense` produced), record each
    run once (ids `<scope>r1`, `<scope>r2`, ... in plan order) and judge each requirement against its run."""
    import torch

    profile = PROFILES[inputs.profile]
    label = f"{defense}: " if defense else ""
    outputs: dict[str, tuple[str, AttackResult]] = {}
    runs: list[Run] = []
    for i, job in enumerate(plan.jobs):
        name = f"{label}{job.attack} ({', '.join(job.requirements)})"
        torch.manual_seed(inputs.seed)
        ctx = AttackContext(model=model, data=data, seed=inputs.seed, profile=profile, confidence=inputs.confidence,
                            progress=(lambda f, name=name: progress(name, f)) if progress else None, cache=_cache(inputs))
        attack = registry.attack_class(job.attack)(**job.params)
        provider = registry.attacks()[job.attack].provider
        t = time.perf_counter()
        out = guarded("attack", job.attack, provider, model, lambda: attack.run(ctx), lambda out: out.details)
        run = Run(id=f"{scope}r{i + 1}", attack=job.attack, params=attack.get_params(),
                  provider=provider, seconds=round(time.perf_counter() - t, 3),
                  defense=defense, not_applicable=out.not_applicable, details=out.details)
        runs.append(run)
        outputs[job.key] = (run.id, out)
        if progress:
            progress(name, 1.0)
    rows, paired = judge_requirements(loaded, plan, outputs)
    return UnitResult(rows, runs, paired=paired)


BUILT_IN = "amulet-audit"


def guarded(kind: str, name: str, provider: str, model: ModelHandle, call: Callable[[], Any],
            evidence: Callable[[Any], Any]) -> Any:
    """`call()` (an attack's `run` or a defense's `apply` on `model`), held to the component contract where the audit
    relies on it: the audited model's weights are the same afterwards (else every later measurement would be of
    another model), and a third-party component's failure or evidence that is not JSON names the component and its
    distribution (`provider`) as bad input (exit 2) instead of passing for an internal error of amulet-audit.

    Raises RegistryError (an InputError) for a third-party component; a built-in's own errors propagate unchanged,
    and a built-in that modified the model is a RuntimeError (an internal error)."""
    import json

    from amulet_audit.core.defense import DefenseNotApplicable
    from amulet_audit.core.digest import weights_digest
    from amulet_audit.core.errors import InputError
    from amulet_audit.core.registry import RegistryError

    plugin = not provider.startswith(BUILT_IN + " ")
    before = weights_digest(model.module)
    try:
        out = call()
        if plugin:
            json.dumps(evidence(out), allow_nan=False)
    except (InputError, DefenseNotApplicable):
        raise
    except Exception as exc:
        if not plugin:
            raise
        raise RegistryError(f"{kind} '{name}' from {provider} failed on this audit ({type(exc).__name__}: {exc}); "
                            f"report it to the authors of {provider.rsplit(' ', 1)[0]}, or leave it out of the "
                            "policy.") from None
    if weights_digest(model.module) != before:
        message = (f"{kind} '{name}' from {provider} modified the audited model's weights, so every later "
                   "measurement would be of another model; the audit stopped")
        if plugin:
            raise RegistryError(message + f"; report it to the authors of {provider.rsplit(' ', 1)[0]}.")
        raise RuntimeError(message + ".")
    return out


def judge_requirements(loaded: LoadedPolicy, plan: Plan, outputs: dict[str, tuple[str, AttackResult]]
                       ) -> tuple[list[RequirementResult], dict[str, PairedSample]]:
    """One judged row per requirement, pointing to the run (`outputs`: job key -> run id and what the attack
    returned) that measured it, and the per-record sample behind each measured value that has one."""
    rows, paired = [], {}
    for req in loaded.policy.requirements:
        job = plan.job_of[req.id]
        run_id, out = outputs[job.key]
        threshold = Threshold(op=req.threshold.op, value=req.threshold.value)
        if out.not_applicable or req.metric not in out.metrics:
            value, ci, n, reason = None, None, 0, out.not_applicable or f"{job.attack} did not report {req.metric}"
            ci_method, bound = "", ("", "")
        else:
            m = out.metrics[req.metric]
            value, ci, n, reason = m.value, m.ci, m.n, m.reason
            bound = (m.bound, m.bound_reason)
            ci_method = "" if value is None else m.ci_method or "not stated by the attack"
            if m.paired is not None:
                paired[req.id] = m.paired
        verdict, why = judge(value, ci, threshold.op, threshold.value, reason, bound=bound[0], bound_reason=bound[1])
        spec = registry.metric(req.metric)
        rows.append(RequirementResult(
            id=req.id, title=req.title, risk=req.risk, attack=job.attack, metric=req.metric,
            value=value, ci=list(ci) if ci is not None else None, ci_method=ci_method, n=n, threshold=threshold,
            verdict=verdict, reason=why, cite=req.cite, severity=req.severity, basis=req.basis,
            rationale=req.rationale, run=run_id,
            metric_info=MetricInfo(higher_is_worse=spec.higher_is_worse, unit=spec.unit),
        ))
    return rows, paired


def run_unit(unit: Unit, progress: Progress | None = None) -> UnitResult:
    """The baseline evaluation, or: apply one defense to a copy of the audited model and evaluate that."""
    model, data, loaded = _inputs(unit.inputs)
    plan = build_plan(loaded.policy)
    if unit.defense is None:
        return evaluate(model, data, loaded, plan, unit.inputs, scope=unit.scope, progress=progress)

    from amulet_audit.core.defense import DefenseContext, DefenseNotApplicable
    from amulet_audit.ops.forward import clean_accuracy

    job = unit.defense
    defense, description, provider = _defense(job)
    label = f"{job.name}: "
    t = time.perf_counter()
    ctx = DefenseContext(model=model, data=data, seed=unit.inputs.seed, profile=PROFILES[unit.inputs.profile],
                         cache=_cache(unit.inputs),
                         progress=(lambda f: progress(f"{label}training", f)) if progress else None)
    parts = [p.name for p in job.parts or ()]
    try:
        outcome = guarded("defense", job.name, provider, model, lambda: defense.apply(ctx), lambda out: out.details)
    except DefenseNotApplicable as exc:
        return UnitResult([], [], DefenseResult(
            name=job.name, description=description, params=defense.get_params(), intended=list(defense.intended),
            provider=provider, not_applicable=str(exc), parts=parts))
    trained = round(time.perf_counter() - t, 3)
    measured = evaluate(outcome.model, data, loaded, plan, unit.inputs, defense=job.name, scope=unit.scope,
                        progress=progress)
    measured.defense = DefenseResult(
        name=job.name, description=description, params=defense.get_params(), intended=list(defense.intended),
        model_sha256=outcome.model.sha256, clean_accuracy_before=clean_accuracy(model.module, data),
        clean_accuracy_after=clean_accuracy(outcome.model.module, data), details=outcome.details,
        requirements=measured.requirements, provider=provider, training_seconds=trained,
        seconds=round(time.perf_counter() - t, 3), parts=parts,
    )
    return measured


def _defense(job: DefenseJob):
    """(the defense object, its description, its provider) for a defense job: a registered defense, or a
    `Combination` of registered ones (its provider: the first part's that is not built in, else the built-in's,
    so a third-party part is held to the component contract)."""
    from amulet_audit.core.defense import Combination

    if not job.parts:
        reg = registry.defenses()[job.name]
        return reg.obj(**job.params), reg.obj.description, reg.provider
    regs = [registry.defenses()[p.name] for p in job.parts]
    combination = Combination([r.obj(**p.params) for r, p in zip(regs, job.parts)])
    providers = [r.provider for r in regs]
    provider = next((p for p in providers if not p.startswith(BUILT_IN + " ")), providers[0])
    return combination, " + ".join(r.obj.description for r in regs), provider


def run_audit(model: ModelHandle, data: AuditData, loaded: LoadedPolicy, *, seed: int, profile: Profile,
              confidence: float = 0.95, progress: Progress | None = None, cache=None, jobs: int = 1) -> AuditResult:
    """Evaluate every requirement on `model`, then on a copy defended by each of the policy's defenses, and
    compare. `cache`: a ModelCache for trained copies (or None); `jobs`: local processes for independent units."""
    from amulet_audit.ops.scores import attach

    started = _now()
    t0 = time.perf_counter()
    model = attach(model, data)  # a no-op when the CLI has read the model's output convention already
    inputs = Inputs(
        model_path=str(model.path), model_format=model.format, architecture=model.architecture,
        data_path=str(data.spec_path), policy_path=str(loaded.path), seed=seed, profile=profile.name,
        confidence=confidence, cache_root=str(cache.root) if cache is not None and cache.root is not None else None,
    )
    _LOADED[inputs] = (model, data, loaded)
    plan = build_plan(loaded.policy)
    units = [Unit(inputs)] + [Unit(inputs, d, _scope(d, plan)) for d in plan.defenses]
    results: list[UnitResult | None] = [None] * len(units)
    if any(_takes_baseline(p) for d in plan.defenses for p in d.parts or [d]):  # e.g. fairness mitigation's attribute
        results[0] = run_unit(units[0], progress)
        units = [units[0]] + [replace(u, defense=_aimed(u.defense, results[0])) for u in units[1:]]
    pending = [i for i, r in enumerate(results) if r is None]
    if jobs > 1 and len(pending) > 1:
        for k, res in LocalExecutor(jobs).map(run_unit, [units[i] for i in pending]):
            i = pending[k]
            results[i] = res
            if progress:
                progress(units[i].defense.name if units[i].defense else "baseline", 1.0)
    else:
        for i in pending:
            results[i] = run_unit(units[i], progress)

    # once per audit: does a copy trained with the data spec's recipe reproduce the model? (run/fidelity.py)
    from amulet_audit.run.fidelity import copy_fidelity, mark

    fidelity = copy_fidelity(model, data, seed=seed, confidence=confidence, cache=cache)
    for res in results:
        mark(fidelity, res.requirements, res.runs, model, defended=res.defense is not None)
        if res.defense is not None:
            mark(fidelity, res.defense.requirements, res.runs, model, defended=True)
    # once per attack job: the same attack on a deliberately vulnerable positive control (run/controls.py); a PASS
    # whose attack did not detect it, on the audited or a defended model, becomes INDETERMINATE
    from amulet_audit.run import controls

    positive = controls.positive_controls(model, data, plan, seed=seed, profile=profile, confidence=confidence,
                                          cache=_cache(inputs), progress=progress,
                                          metrics={r.id: r.metric for r in loaded.policy.requirements})
    for res in results:
        controls.mark(positive, plan, res.requirements)
        if res.defense is not None and res.defense.requirements is not res.requirements:
            controls.mark(positive, plan, res.defense.requirements)
    baseline, baseline_paired = results[0].requirements, results[0].paired
    runs: list[Run] = []
    interactions, defenses = [], []
    tolerance = loaded.policy.interactions.tolerance if loaded.policy.interactions else 0.0
    fdr = loaded.policy.interactions.fdr if loaded.policy.interactions else FDR
    for res in results:
        runs += res.runs
        if res.defense is not None:
            defenses.append(res.defense)
            interactions += compare(res.defense.name, tuple(res.defense.intended), baseline, res.requirements,
                                    tolerance=tolerance, confidence=confidence, paired=(baseline_paired, res.paired),
                                    reps=profile.bootstrap_reps, seed=seed, fdr=fdr)
    interactions = flag(interactions, fdr=fdr)  # the false discovery rate over the whole defense x requirement matrix

    def alone(part: DefenseJob) -> UnitResult | None:  # results[k + 1] is the evaluation of plan.defenses[k]
        return next((results[k + 1] for k, d in enumerate(plan.defenses) if d == part), None)

    combined = flag([row for k, d in enumerate(plan.defenses) if d.parts
                     for row in versus_parts(d, results[k + 1], alone, tolerance=tolerance, confidence=confidence,
                                             reps=profile.bootstrap_reps, seed=seed, fdr=fdr)], fdr=fdr)
    timings = {"total": round(time.perf_counter() - t0, 3), "copy_fidelity": fidelity.seconds,
               "positive_controls": controls.seconds(positive)}
    return AuditResult(
        tool=ToolInfo(version=__version__),
        verdict=overall([r.verdict for r in baseline]),
        model=_model_info(model),
        data=_data_info(data),
        policy=_policy_info(loaded),
        requirements=baseline,
        model_output=model.output,
        copy_fidelity=fidelity,
        runs=runs,
        interactions=interactions,
        combined=combined,
        defenses=defenses,
        seed=seed,
        profile=profile.name,
        confidence=confidence,
        environment={**environment(), "jobs": jobs, "plugins": _plugins(plan)},
        started_at=started,
        finished_at=_now(),
        timings=timings,
    )


def versus_parts(combo: DefenseJob, result: UnitResult, alone, *, tolerance: float, confidence: float, reps: int,
                 seed: int, fdr: float) -> list:
    """The combination `combo` (its evaluation `result`) compared with each of its parts applied alone (`alone(part
    job)` -> that part's UnitResult), on the requirements of the risks that part is meant for: rows with `versus`
    the part's name, `baseline` its value alone and `defended` the combination's. A worsening there is combining
    undoing what the part achieved. Nothing when the combination or the part was not applicable."""
    rows = []
    if result.defense is None or result.defense.not_applicable:
        return rows
    for part in combo.parts:
        single = alone(part)
        if single is None or single.defense is None or single.defense.not_applicable:
            continue
        mine = [r for r in single.requirements if r.risk in single.defense.intended]
        rows += [row.model_copy(update={"versus": part.name})
                 for row in compare(combo.name, (), mine, result.requirements, tolerance=tolerance,
                                    confidence=confidence, paired=(single.paired, result.paired), reps=reps, seed=seed,
                                    fdr=fdr)]
    return rows


def _takes_baseline(defense: DefenseJob) -> bool:
    return callable(getattr(registry.defense_class(defense.name), "baseline_params", None))


def _aimed(defense: DefenseJob, baseline: UnitResult) -> DefenseJob:
    """`defense` with the parameters its class takes from the baseline evaluation (`baseline_params(findings)`,
    e.g. the attribute fairness mitigation aims at); the policy's own parameters win. Findings: one dict per
    baseline requirement (id, risk, metric, value, verdict, details of the run that measured it). Only the runner
    can do this: the plan is built before anything is measured, and defense units may run in other processes."""
    if defense.parts:
        return replace(defense, parts=[_aimed(p, baseline) for p in defense.parts])
    hook = getattr(registry.defense_class(defense.name), "baseline_params", None)
    if not callable(hook):
        return defense
    details = {r.id: r.details for r in baseline.runs}
    findings = [{"id": r.id, "risk": r.risk, "metric": r.metric, "value": r.value,
                 "verdict": getattr(r.verdict, "value", r.verdict), "details": details.get(r.run) or {}}
                for r in baseline.requirements]
    return DefenseJob(defense.name, {**hook(findings), **defense.params})


def _scope(defense: DefenseJob, plan: Plan) -> str:
    """The run-id prefix of a defended model's runs: the defense's name, numbered when the policy applies the same
    defense more than once (with other parameters)."""
    same = [d for d in plan.defenses if d.name == defense.name]
    return f"{defense.name}/" if len(same) == 1 else f"{defense.name}#{[d is defense for d in same].index(True) + 1}/"


def _plugins(plan: Plan) -> dict[str, str]:
    out = {job.attack: registry.attacks()[job.attack].provider for job in plan.jobs}
    out.update({p.name: registry.defenses()[p.name].provider for d in plan.defenses for p in d.parts or [d]})
    return out


def _model_info(model: ModelHandle) -> ModelInfo:
    return ModelInfo(path=str(model.path), sha256=model.sha256, format=model.format, parameters=model.parameters,
                     architecture=model.architecture, warnings=model.warnings, output_note=model.output_note)


def _data_info(data: AuditData) -> DataInfo:
    spec = data.spec
    return DataInfo(path=str(data.spec_path), sha256=data.sha256, name=spec.name, files=data.files,
                    n_train=len(data.y_train), n_holdout=len(data.y_holdout), n_features=data.n_features,
                    classes=data.classes,
                    positive_label=None if data.positive_index is None else data.classes[data.positive_index],
                    sensitive=list(spec.sensitive))


def _policy_info(loaded: LoadedPolicy) -> PolicyInfo:
    policy = loaded.policy
    info: dict[str, Any] = {}
    if getattr(policy, "recertification", None) is not None:
        info["recertification_days"] = policy.recertification.period_days
    return PolicyInfo(id=policy.policy, sha256=loaded.sha256, title=policy.title, path=str(loaded.path),
                      regulation=policy.regulation.model_dump(mode="json") if policy.regulation else {}, **info)
