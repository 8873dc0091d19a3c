"""The audit's jobs as plain data (`Task`: paths and settings) and how one runs (`run_task`), in this process,
another one, or on a Ray worker: an attack job on the audited or a defended model (`run_attack`, with the
gradient-free attack in place of one the model's access does not allow), a defense job, the training-fidelity
check or a positive control. Every component runs under `guarded`, which holds it to the component contract."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amulet_audit.core import registry
from amulet_audit.core.attack import PROFILES, AttackContext, AttackResult
from amulet_audit.core.errors import QueryBudgetExceeded
from amulet_audit.inputs.data import AuditData
from amulet_audit.inputs.model import ModelHandle
from amulet_audit.plan import DefenseJob, Plan, build_plan
from amulet_audit.policy.load import LoadedPolicy
from amulet_audit.results.model import DefenseResult, Run

# progress(label, fraction_done); the CLI turns it into progress bars.
Progress = Callable[[str, float], None]


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
    trust_types: tuple[str, ...] = ()  # a skops model's types trusted with --trust-type
    device: str = "cpu"  # where the models compute (`core.device`): every process that runs a job uses it


# Inputs already loaded in this process (the CLI's, or a worker's after its first unit).
_LOADED: dict[Inputs, tuple[ModelHandle, AuditData, LoadedPolicy]] = {}


def _inputs(inputs: Inputs) -> tuple[ModelHandle, AuditData, LoadedPolicy]:
    from amulet_audit.core.device import use

    use(inputs.device)
    if inputs not in _LOADED:
        from amulet_audit.inputs.data import load_data
        from amulet_audit.inputs.model import load_model
        from amulet_audit.policy import load_policy

        from amulet_audit.ops.scores import attach

        model = load_model(inputs.model_path, arch=inputs.architecture if inputs.model_format == "state_dict" else None,
                           trust_pickle=inputs.model_format == "pickle", trust_types=inputs.trust_types)
        data = load_data(inputs.data_path)
        _LOADED[inputs] = (attach(model, data).placed(), data, load_policy(inputs.policy_path))
    return _LOADED[inputs]


def _cache(inputs: Inputs):
    from amulet_audit.training.cache import ModelCache

    return ModelCache(Path(inputs.cache_root) if inputs.cache_root else None)


def run_attack(model: ModelHandle, data: AuditData, plan: Plan, index: int, inputs: Inputs, *,
               defense: str | None = None, scope: str = "", progress: Progress | None = None) -> tuple[Run, AttackResult]:
    """Run attack job `plan.jobs[index]` on `model` (the audited one, or the copy `defense` produced): its `Run`
    (id `<scope>r<index + 1>`) and what the attack returned. The global torch seed is the audit's before each run."""
    import torch

    job = plan.jobs[index]
    name = f"{defense + ': ' if defense else ''}{job.attack} ({', '.join(job.requirements)})"
    torch.manual_seed(inputs.seed)
    ctx = AttackContext(model=model, data=data, seed=inputs.seed, profile=PROFILES[inputs.profile],
                        confidence=inputs.confidence,
                        progress=(lambda f: progress(name, f)) if progress else None, cache=_cache(inputs))
    attack = registry.attack_class(job.attack)(**job.params)
    provider = registry.attacks()[job.attack].provider
    t = time.perf_counter()
    try:
        out = guarded("attack", job.attack, provider, model, lambda: attack.run(ctx), lambda out: out.details)
    except QueryBudgetExceeded as exc:  # a prediction service's query budget ran out during this attack
        out = AttackResult({}, {}, not_applicable=f"the attack could not finish: {exc}")
    # e.g. PGD on a tree ensemble: the gradient-free attack of the same risk measures it instead
    attack, provider, out = _instead(attack, out, ctx, job.attack, provider)
    run = Run(id=f"{scope}r{index + 1}", attack=attack.name, params=attack.get_params(), provider=provider,
              seconds=round(time.perf_counter() - t, 3), defense=defense, not_applicable=out.not_applicable,
              details=out.details)
    if progress:
        progress(name, 1.0)
    return run, out


def _prepare(model: ModelHandle, data: AuditData, job, inputs: Inputs, defense: DefenseJob | None,
             progress: Progress | None) -> dict:
    """A copies job: train what attack job `job` (and those sharing its `Attack.copies`) trains first, on `model`,
    into the model cache. What fails here is left to the attack jobs, which meet it again and report it as theirs.
    Returns what was trained, how long it took, and the failure if any."""
    import torch

    attack = registry.attack_class(job.attack)(**job.params)
    what = attack.copies(PROFILES[inputs.profile])
    name = f"{defense.name + ': ' if defense else ''}{what[0].replace('_', ' ')} ({job.attack})"
    torch.manual_seed(inputs.seed)
    ctx = AttackContext(model=model, data=data, seed=inputs.seed, profile=PROFILES[inputs.profile],
                        confidence=inputs.confidence, progress=(lambda f: progress(name, f)) if progress else None,
                        cache=_cache(inputs))
    t = time.perf_counter()
    try:
        attack.prepare(ctx)
        failure = ""
    except Exception as exc:  # noqa: BLE001 - the attack jobs report it
        failure = f"{type(exc).__name__}: {exc}"
    if progress:
        progress(name, 1.0)
    return {"copies": what, "seconds": round(time.perf_counter() - t, 3), "failure": failure}


def _instead(attack, out: AttackResult, ctx: AttackContext, name: str, provider: str):
    """(attack, provider, result): where `attack` (or one of its metrics) does not apply to the model because it
    offers no gradients or no scores, the attack of the same risk that measures it from what the model offers (`Attack.alternative`, e.g. the
    score-based square attack for PGD on a tree ensemble), run with the parameters both take (the same budget);
    its evidence records what it stands in for (`instead_of`). Else `attack` and its not-applicable result."""
    import dataclasses

    import torch

    other, _ = attack.alternative(ctx.model)
    reasons = [out.not_applicable] + [m.reason for m in out.metrics.values() if m.value is None]
    reason = next((r for r in reasons if r and other and other in r), "")
    if not reason or other not in registry.attacks():
        return attack, provider, out
    cls = registry.attack_class(other)
    substitute = cls(**{k: v for k, v in attack.get_params().items() if k in cls.parameter_constraints})
    if substitute.unmet(substitute.validated_params(), ctx.model, ctx.data):
        return attack, provider, out
    torch.manual_seed(ctx.seed)
    provider = registry.attacks()[other].provider
    instead = {"attack": name, "params": attack.get_params(), "reason": reason, "measured_by": other}
    try:
        result = guarded("attack", other, provider, ctx.model, lambda: substitute.run(ctx), lambda o: o.details)
    except QueryBudgetExceeded as exc:  # a prediction service's query budget ran out: what the attack measured stays
        why = f"{reason.split('; the ')[0]}; {other}, run in its place, could not finish: {exc}"
        metrics = {k: m if m.value is not None else dataclasses.replace(m, reason=why) for k, m in out.metrics.items()}
        return attack, provider, dataclasses.replace(out, metrics=metrics,
                                                     not_applicable=why if out.not_applicable else "")
    return substitute, provider, dataclasses.replace(result, details={**result.details, "instead_of": instead})


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


@dataclass(frozen=True)
class Task:
    """One job of the audit's graph (`run.graph`), as plain data another process (or a Ray worker) can run:
    an attack job (`plan.jobs[index]`) on the audited model (`defense` None) or on the copy `defense` produced,
    or (kind "defense") applying `defense` and measuring its utility."""

    inputs: Inputs
    kind: str
    defense: DefenseJob | None = None
    scope: str = ""
    index: int = -1


# Defended models already made in this process: (inputs, defense job) -> DefenseOutcome, or the reason it was not
# applicable. Attack jobs on a defended model made elsewhere (another worker, a killed run) make it again here,
# from the trained copies cached by content.
_DEFENDED: dict[tuple[Inputs, str], Any] = {}


def run_task(task: Task, progress: Progress | None = None) -> Any:
    """A job's output: (Run, AttackResult) for an attack job, None for an attack job on a defended model that
    could not be made (its defense job says why); for a defense job, its DefenseResult without requirements; the
    CopyFidelity of the fidelity job; the Control of a control job; what a copies job trained (`_prepare`)."""
    model, data, loaded = _inputs(task.inputs)
    if task.kind == "defense":
        return _defense_result(task, progress)
    if task.kind == "fidelity":
        from amulet_audit.run.fidelity import copy_fidelity

        return copy_fidelity(model, data, seed=task.inputs.seed, confidence=task.inputs.confidence,
                             cache=_cache(task.inputs))
    if task.kind == "control":
        from amulet_audit.run.controls import control_of

        return control_of(build_plan(loaded.policy).jobs[task.index], model, data, seed=task.inputs.seed,
                          profile=PROFILES[task.inputs.profile], confidence=task.inputs.confidence,
                          cache=_cache(task.inputs), progress=progress,
                          metrics={r.id: r.metric for r in loaded.policy.requirements})
    target = model
    if task.defense is not None:
        outcome = _defended(task.inputs, task.defense, progress)
        if isinstance(outcome, str):
            return None
        target = outcome.model
    if task.kind == "copies":
        return _prepare(target, data, build_plan(loaded.policy).jobs[task.index], task.inputs, task.defense, progress)
    return run_attack(target, data, build_plan(loaded.policy), task.index, task.inputs,
                      defense=task.defense.name if task.defense else None, scope=task.scope, progress=progress)


def _defended(inputs: Inputs, job: DefenseJob, progress: Progress | None = None) -> Any:
    """(DefenseOutcome, seconds) of applying `job` to a copy of the audited model, or the one-sentence reason it is
    not applicable (str); made once per process."""
    from amulet_audit.core.defense import DefenseContext, DefenseNotApplicable

    memo = (inputs, repr(job))
    if memo not in _DEFENDED:
        model, data, _ = _inputs(inputs)
        defense, _, provider = _defense(job)
        ctx = DefenseContext(model=model, data=data, seed=inputs.seed, profile=PROFILES[inputs.profile],
                             cache=_cache(inputs),
                             progress=(lambda f: progress(f"{job.name}: training", f)) if progress else None)
        try:
            _DEFENDED[memo] = guarded("defense", job.name, provider, model, lambda: defense.apply(ctx),
                                      lambda out: out.details)
        except DefenseNotApplicable as exc:
            _DEFENDED[memo] = str(exc)
        except QueryBudgetExceeded as exc:  # a prediction service's query budget ran out
            _DEFENDED[memo] = f"the defense could not be measured: {exc}"
    return _DEFENDED[memo]


def _defense_result(task: Task, progress: Progress | None) -> DefenseResult:
    """Apply the task's defense and measure its utility: the DefenseResult its attack jobs' requirements join."""
    from amulet_audit.ops.forward import clean_accuracy

    job = task.defense
    model, data, _ = _inputs(task.inputs)
    defense, description, provider = _defense(job)
    t = time.perf_counter()
    outcome = _defended(task.inputs, job, progress)
    head = dict(name=job.name, description=description, params=defense.get_params(), intended=list(defense.intended),
                provider=provider, parts=[p.name for p in job.parts or ()])
    if isinstance(outcome, str):
        return DefenseResult(**head, not_applicable=outcome)
    try:
        before, after = clean_accuracy(model.module, data), clean_accuracy(outcome.model.module, data)
        warnings = _constant(outcome.model, data)
    except QueryBudgetExceeded as exc:  # a prediction service's query budget ran out
        return DefenseResult(**head, not_applicable=f"the defense could not be measured: {exc}")
    return DefenseResult(**head, model_sha256=outcome.model.sha256, clean_accuracy_before=before,
                         clean_accuracy_after=after, details=outcome.details,
                         training_seconds=round(time.perf_counter() - t, 3), warnings=warnings)


def _constant(model: ModelHandle, data: AuditData) -> list[str]:
    """A warning when `model` (a defended copy) predicts one class for every holdout record: then what is measured
    on it describes a constant model (its robust accuracy is that class's share, its membership scores carry no
    signal), not a robust or private one."""
    import numpy as np

    from amulet_audit.ops.forward import predict

    labels = np.unique(predict(model.module, data.x_holdout))
    if len(labels) != 1:
        return []
    share = float(np.mean(data.y_holdout == labels[0]))
    return [f"the defended model predicts '{data.classes[int(labels[0])]}' for every holdout record (the share of "
            f"that class is {share:.3f}): what is measured on it describes a constant model (e.g. its robust accuracy "
            "is that share), not a robust, private or fair one"]


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
