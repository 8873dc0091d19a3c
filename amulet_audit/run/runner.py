"""The runner: the audit's jobs (`run.graph`: every attack on the audited model and on each defended model, each
defense, the training-fidelity check and the positive controls) run by an executor, then verdicts, the
interaction matrix and the combinations against their parts. Each job runs through `run.jobs.run_task`."""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from amulet_audit import __version__
from amulet_audit.core import registry
from amulet_audit.core.attack import PROFILES, AttackResult, PairedSample, Profile
from amulet_audit.core.device import describe
from amulet_audit.inputs.data import AuditData
from amulet_audit.inputs.model import ModelHandle
from amulet_audit.plan import DefenseJob, Plan, build_plan
from amulet_audit.policy.load import LoadedPolicy
from amulet_audit.results.model import (
    AuditResult, DataInfo, DefenseResult, MetricInfo, ModelInfo, PolicyInfo, RequirementResult, Run, Threshold, ToolInfo,
)
from amulet_audit.results.verdict import judge, overall
from amulet_audit.run.environment import environment
from amulet_audit.run.executor import LocalExecutor
from amulet_audit.run.interactions import FDR, compare, flag
from amulet_audit.run.jobs import _LOADED, Inputs, Progress, Task, run_task

def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class UnitResult:
    requirements: list[RequirementResult]
    runs: list[Run] = field(default_factory=list)
    defense: DefenseResult | None = None
    # requirement id -> the per-record sample behind its value, for paired comparisons (not written out)
    paired: dict[str, PairedSample] = field(default_factory=dict)


def assemble(loaded: LoadedPolicy, plan: Plan, attacks: list[tuple[Run, AttackResult] | None]) -> UnitResult:
    """The judged requirements of one model from its attack runs (`attacks[i]`: plan.jobs[i]'s run and output, or
    None while it has not run: its requirements are left out, e.g. for what a defense reads of the baseline early)."""
    outputs = {job.key: (a[0].id, a[1]) for job, a in zip(plan.jobs, attacks) if a is not None}
    rows, paired = judge_requirements(loaded, plan, outputs)
    return UnitResult(rows, [a[0] for a in attacks if a is not None], paired=paired)


def judge_requirements(loaded: LoadedPolicy, plan: Plan, outputs: dict[str, tuple[str, AttackResult]]
                       ) -> tuple[list[RequirementResult], dict[str, PairedSample]]:
    """One judged row per requirement, pointing to the run (`outputs`: job key -> run id and what the attack
    returned) that measured it, and the per-record sample behind each measured value that has one."""
    rows, paired = [], {}
    for req in loaded.policy.requirements:
        job = plan.job_of[req.id]
        if job.key not in outputs:  # not run yet (`assemble` of part of the audit)
            continue
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
        spec = registry.metric(req.metric)
        instead = (out.details or {}).get("instead_of")
        notes = [f"{instead['attack']} does not apply to this model ({instead['reason'].split('; the ')[0]}): "
                 f"measured instead by {instead['measured_by']} with the parameters both take"] if instead else []
        if instead and not bound[0]:
            # a stand-in may be weaker than the attack the policy names: its value bounds the risk from the side of
            # less risk, so it can show a breach (FAIL) but never that the risk is within the threshold (PASS)
            bound = ("lower" if spec.higher_is_worse else "upper",
                     f"measured by {instead['measured_by']} in place of {instead['attack']}, which may be stronger: "
                     "a value within the threshold does not show the risk is")
        verdict, why = judge(value, ci, threshold.op, threshold.value, reason, bound=bound[0], bound_reason=bound[1])
        rows.append(RequirementResult(
            id=req.id, title=req.title, risk=req.risk, attack=job.attack, metric=req.metric, warnings=notes,
            value=value, ci=list(ci) if ci is not None else None, ci_method=ci_method, n=n, threshold=threshold,
            verdict=verdict, reason=why, cite=req.cite, severity=req.severity, basis=req.basis,
            rationale=req.rationale, run=run_id,
            metric_info=MetricInfo(higher_is_worse=spec.higher_is_worse, unit=spec.unit),
        ))
    return rows, paired


def run_audit(model: ModelHandle, data: AuditData, loaded: LoadedPolicy, *, seed: int, profile: Profile,
              confidence: float = 0.95, progress: Progress | None = None, cache=None, jobs: int = 1,
              state_dir: Path | None = None, executor: str = "local", ray_address: str | None = None,
              device: str = "cpu") -> AuditResult:
    """Evaluate every requirement on `model`, then on a copy defended by each of the policy's defenses, and
    compare. `cache`: a ModelCache for trained copies (or None); `jobs`: local processes for the job graph
    (`run.graph`); `state_dir`: where finished jobs are stored as they complete, so an audit run again after a kill
    reuses them (None: kept in memory). The caller removes `state_dir` once the results are written. `executor`:
    "local" (processes on this machine) or "ray" (Ray tasks on the cluster at `ray_address`, else on a local Ray
    with `jobs` CPUs). `device`: where the models compute (a name `core.device.resolve` returned)."""
    from amulet_audit.core.device import use
    from amulet_audit.ops.scores import attach

    started = _now()
    t0 = time.perf_counter()
    model = attach(model, data)  # a no-op when the CLI has read the model's output convention already
    if executor == "local":  # jobs run in this machine's processes; on Ray, the workers place the model themselves
        use(device)
        model = model.placed()
    inputs = Inputs(
        model_path=str(model.path), model_format=model.format, architecture=model.architecture,
        data_path=str(data.spec_path), policy_path=str(loaded.path), seed=seed, profile=profile.name,
        confidence=confidence, cache_root=_cache_root(cache, state_dir),
        trust_types=tuple(getattr(model, "trusted_types", ())), device=device,
    )
    _LOADED[inputs] = (model, data, loaded)
    plan = build_plan(loaded.policy)
    results, fidelity, positive, store = _run_graph(model, data, loaded, plan, inputs, jobs=jobs, state_dir=state_dir,
                                                    progress=progress, executor=executor, ray_address=ray_address)

    # does a copy trained with the data spec's recipe reproduce the model? (run/fidelity.py); would each privacy
    # and poisoning attack have detected a deliberately vulnerable control? (run/controls.py) A PASS that relies on
    # copies that do not reproduce the model, or whose attack did not detect its control, is not PASS.
    from amulet_audit.run import controls
    from amulet_audit.run.fidelity import mark

    for res in results:
        mark(fidelity, res.requirements, res.runs, model, defended=res.defense is not None)
        controls.mark(positive, plan, res.requirements)
        if res.defense is not None and res.defense.requirements is not res.requirements:
            mark(fidelity, res.defense.requirements, res.runs, model, defended=True)
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
        environment={**environment(), "device": describe(device), "jobs": jobs, "executor": executor,
                     "jobs_reused": store.reused,
                     "plugins": _plugins(plan), **_endpoint_queries(model)},
        started_at=started,
        finished_at=_now(),
        timings=timings,
    )


def versus_parts(combo: DefenseJob, result: UnitResult, alone, *, tolerance: float, confidence: float, reps: int,
                 seed: int, fdr: float) -> list:
    """The combination `combo` (its evaluation `result`) compared with each of its parts applied alone (`alone(part
    job)` -> that part's UnitResult), on the requirements of the risks that part is meant for: rows with `versus`
    the part's name, `baseline` its value alone and `defended` the combination's. A worsening there is combining
    undoing what the part achieved. Nothing when the combination or the part was not applicable; a requirement the
    part measured that the combination could not is a warning on the combination's DefenseResult."""
    rows = []
    if result.defense is None or result.defense.not_applicable:
        return rows
    combined = {r.id: r for r in result.requirements}
    for part in combo.parts:
        single = alone(part)
        if single is None or single.defense is None or single.defense.not_applicable:
            continue
        mine = [r for r in single.requirements if r.risk in single.defense.intended]
        # what the part achieved alone and the combination cannot be compared on: said, not dropped
        result.defense.warnings += [
            f"compared with {part.name} alone ({r.value:.3f}), '{r.id}' could not be compared: on the combination, "
            f"{combined[r.id].reason or 'it has no value'}"
            for r in mine if r.value is not None and r.id in combined and combined[r.id].value is None]
        rows += [row.model_copy(update={"versus": part.name})
                 for row in compare(combo.name, (), mine, result.requirements, tolerance=tolerance,
                                    confidence=confidence, paired=(single.paired, result.paired), reps=reps, seed=seed,
                                    fdr=fdr)]
    return rows


def _executor(kind: str, model: ModelHandle, data: AuditData, loaded: LoadedPolicy, *, jobs: int,
              ray_address: str | None, progress: Progress | None, cache_root: str | None = None, gpu: bool = False):
    """A LocalExecutor with `jobs` processes, or a RayExecutor (the inputs shipped as content-addressed bytes)."""
    if kind == "ray":
        from amulet_audit.run.ray_executor import RayExecutor, bundle

        source = Path(data.spec_path).parent / data.spec.source.path
        return RayExecutor(bundle(str(model.path), str(data.spec_path), loaded.policy, str(source), cache_root),
                           address=ray_address, num_cpus=jobs, gpu=gpu)
    return LocalExecutor(run_task, jobs, progress)


def _cache_root(cache, state_dir: Path | None) -> str | None:
    """Where trained copies are cached: the audit's cache, else the job store's own (so that a job re-run after a
    kill, or a job on a defended model made in another process, loads the copies instead of training them)."""
    if cache is not None and cache.root is not None:
        return str(cache.root)
    return str(Path(state_dir) / "cache") if state_dir is not None else None


def _run_graph(model: ModelHandle, data: AuditData, loaded: LoadedPolicy, plan: Plan, inputs: Inputs, *, jobs: int,
               state_dir: Path | None, progress: Progress | None, executor: str = "local",
               ray_address: str | None = None):
    """Every attack job on the audited model and on each defended model, and every defense job, as one graph
    (`run.graph`) run by the executor (`_executor`), with the training-fidelity check and the positive controls:
    (one UnitResult per model, audited first; the CopyFidelity; job key -> Control; the job store). A defense that
    aims at the baseline's findings waits for every attack job of the audited model."""
    from amulet_audit.run import graph

    from amulet_audit.run.controls import controlled

    aims = [_waits_for(d, plan) for d in plan.defenses]
    budgeted = callable(getattr(model, "queries", None))  # a prediction service: every query counts
    if budgeted:  # what an attack asks of the service: searches over many records cost most
        heavy = {"evasion": 100, "model_extraction": 10}
        trains = [heavy.get(registry.attack_class(j.attack).risk, 1) if j.attack in registry.attacks() else 1
                  for j in plan.jobs]
    else:
        trains = [registry.attack_class(j.attack)(**j.params).uses_copies(j.params, model)
                  if j.attack in registry.attacks() else False for j in plan.jobs]
    # copies that attack jobs share train as jobs of their own where they are cached for the attack jobs to load:
    # on this machine's cache (a Ray worker elsewhere would train them again), and not under a query budget
    shared = (_shared_copies(plan, model, data, inputs) if executor == "local" and inputs.cache_root and not budgeted
              else None)
    costs = [_cost(d, PROFILES[inputs.profile]) for d in plan.defenses]
    nodes = graph.build_graph(len(plan.defenses), len(plan.jobs), aims, controlled(plan), trains, shared, costs)
    scopes = [""] + [_scope(d, plan) for d in plan.defenses]
    n = len(plan.jobs)
    digest = graph.inputs_digest(model.sha256, data.sha256, inputs.seed, inputs.profile, inputs.confidence,
                                 model.output, inputs.device)
    keys: dict[int, str] = {}
    done: dict[int, Any] = {}
    aimed: dict[int, DefenseJob] = {}

    def defense_of(unit: int) -> DefenseJob | None:
        if unit == 0:
            return None
        if unit not in aimed:
            d = plan.defenses[unit - 1]
            aimed[unit] = _aimed(d, assemble(loaded, plan, [done.get(i) for i in range(n)])) if aims[unit - 1] else d
        return aimed[unit]

    def key(i: int) -> str:
        if i not in keys:
            node = nodes[i]
            job = plan.jobs[node.index].key if node.kind in ("attack", "control") else None
            if node.kind == "copies":
                job = _copies_of(plan.jobs[node.index], inputs)
            if node.kind == "control":  # a membership control keeps as many non-members as its metrics need
                job = (job, sorted(r.metric for r in loaded.policy.requirements if plan.job_of[r.id] is plan.jobs[node.index]))
            keys[i] = graph.node_key(digest, node, defense_of(node.unit), job, [keys[d] for d in node.deps])
        return keys[i]

    def task(i: int) -> Task:
        node = nodes[i]
        return Task(inputs, node.kind, defense_of(node.unit), scopes[node.unit], node.index)

    store = graph.Store(Path(state_dir) if state_dir is not None else None)
    with _executor(executor, model, data, loaded, jobs=jobs, ray_address=ray_address, progress=progress,
                   cache_root=inputs.cache_root, gpu=inputs.device != "cpu") as ex:
        graph.execute(nodes, key, task, store, ex, progress=progress, on_done=done.__setitem__, cheapest_first=budgeted,
                      reweigh=None if budgeted else _learnt_weights(nodes, trains))
    results = []
    for unit in range(len(plan.defenses) + 1):
        mine = [i for i, node in enumerate(nodes) if node.unit == unit and node.kind in ("attack", "defense")]
        # ids for this plan: a job reused from a run of another policy may have had another place in its plan
        attacks = [(done[i][0].model_copy(update={"id": f"{scopes[unit]}r{nodes[i].index + 1}"}), done[i][1])
                   if done[i] is not None else None for i in mine if nodes[i].kind == "attack"]
        head = next((done[i] for i in mine if nodes[i].kind == "defense"), None)
        if head is not None and head.not_applicable:
            results.append(UnitResult([], [], head))
            continue
        res = assemble(loaded, plan, attacks)
        if head is not None:
            res.defense = head.model_copy(update={
                "requirements": res.requirements,
                "seconds": round(head.training_seconds + sum(run.seconds for run in res.runs), 3)})
        results.append(res)
    fidelity = next(done[i] for i, node in enumerate(nodes) if node.kind == "fidelity")
    positive = {plan.jobs[node.index].key: done[i] for i, node in enumerate(nodes) if node.kind == "control"}
    return results, fidelity, positive, store


def _cost(defense: DefenseJob, profile: Profile) -> float:
    """Roughly how many plain trainings of a copy applying `defense` at `profile` costs (`Defense.cost`; a
    combination: the sum of its parts')."""
    return sum(registry.defense_class(p.name)(**p.params).cost(profile) for p in defense.parts or [defense])


def _learnt_weights(nodes: list, trains: list[bool]):
    """`graph.execute`'s `reweigh`: the seconds an attack job (or copies job) took on the audited model are what the
    same job is expected to take on each defended model, plus, for one that trains copies (which train by the
    defense's procedure), the seconds the defense took to train its own copy; so that the long jobs on a costly
    defended model start first and no worker is left waiting on one at the end."""
    measured: dict[tuple[str, int], float] = {}
    training: dict[int, float] = {}

    def expected(node) -> float | None:
        took = measured.get((node.kind, node.index))
        if took is None:
            return None
        return took + (training.get(node.unit, 0.0) if node.kind == "copies" or trains[node.index] else 0.0)

    def reweigh(i: int, out: Any) -> dict[int, float]:
        node = nodes[i]
        if node.unit == 0 and node.kind in ("attack", "copies") and out is not None:
            measured[node.kind, node.index] = out[0].seconds if node.kind == "attack" else out["seconds"]
        elif node.kind == "defense" and out is not None:
            training[node.unit] = out.training_seconds
        else:
            return {}
        return {j: w for j, n in enumerate(nodes) if n.unit > 0 and n.kind in ("attack", "copies")
                and (w := expected(n)) is not None}

    return reweigh


def _copies_of(job, inputs: Inputs) -> tuple | None:
    """What plan job `job` trains before it measures (`Attack.copies`) at the audit's profile, or None."""
    if job.attack not in registry.attacks():
        return None
    return registry.attack_class(job.attack)(**job.params).copies(PROFILES[inputs.profile])


def _shared_copies(plan: Plan, model: ModelHandle, data: AuditData, inputs: Inputs) -> list[int | None]:
    """For each plan job, the first plan job that trains the same copies (`Attack.copies`), or None: it trains none
    apart, or its needs are not met on `model` and `data` (e.g. a model without trainable copies)."""
    first: dict[tuple, int] = {}
    out: list[int | None] = []
    for i, job in enumerate(plan.jobs):
        what = _copies_of(job, inputs)
        attack = registry.attack_class(job.attack)(**job.params) if what is not None else None
        if attack is not None and attack.unmet(attack.validated_params(), model, data):
            what = None
        out.append(None if what is None else first.setdefault(what, i))
    return out


def _waits_for(defense: DefenseJob, plan: Plan) -> tuple[int, ...] | None:
    """The plan jobs whose findings on the audited model `defense` (or a part of it) takes parameters from
    (`baseline_params`): those of the risks it declares in `baseline_risks`, every job when it declares none;
    None when it takes nothing from them."""
    risks = set()
    for part in defense.parts or [defense]:
        cls = registry.defense_class(part.name)
        if callable(getattr(cls, "baseline_params", None)):
            declared = getattr(cls, "baseline_risks", None)
            if not declared:
                return tuple(range(len(plan.jobs)))
            risks.update(declared)
    if not risks:
        return None
    return tuple(i for i, j in enumerate(plan.jobs)
                 if j.attack in registry.attacks() and registry.attack_class(j.attack).risk in risks)


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
    warnings = list(model.warnings)
    counts = _endpoint_queries(model).get("endpoint_queries")
    if counts:  # a model behind a prediction service: what the audit asked of it, for the report's cover
        warnings.append(f"The audit queried the service with {counts['records_queried']:,} records in "
                        f"{counts['requests']:,} requests ({counts['retries']:,} retries, {counts['failed_requests']:,} "
                        "failed), " + (f"within a budget of {counts['budget']:,} records." if counts["budget"]
                                       else "with no query budget."))
    return ModelInfo(path=str(model.path), sha256=model.sha256, format=model.format, parameters=model.parameters,
                     architecture=model.architecture, warnings=warnings, output_note=model.output_note)


def _endpoint_queries(model: ModelHandle) -> dict[str, Any]:
    """{"endpoint_queries": counts} for a model behind a prediction service (`inputs.endpoint`), else {}."""
    queries = getattr(model, "queries", None)
    return {"endpoint_queries": queries()} if callable(queries) else {}


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
