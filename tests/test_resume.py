"""The audit as a graph of content-keyed jobs: killed at any point and run again, it does only the missing jobs and
gives the same numbers; a changed policy invalidates exactly the jobs it touches."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import AMULET, make_tabular
from amulet_audit.run.graph import STORE

POLICY = """\
policy: resume-test
title: Resume test
interactions:
  defenses: [outlier_removal]
requirements:
  - id: robust
    risk: evasion
    attack: {name: pgd, params: {eps: EPS, norm: linf, steps: 10}}
    metric: robust_accuracy
    threshold: {min: THRESHOLD}
  - id: membership
    risk: membership_inference
    attack: {name: lira, params: {online: false}}
    metric: auc
    threshold: {max: 0.6}
  - id: parity
    risk: discrimination
    metric: demographic_parity_difference
    threshold: {max: 0.1}
"""


def _policy(folder: Path, *, eps: float = 0.1, threshold: float = 0.5) -> Path:
    path = folder / f"policy-{eps}-{threshold}.yaml"
    path.write_text(POLICY.replace("EPS", str(eps)).replace("THRESHOLD", str(threshold)))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return make_tabular(tmp_path_factory.mktemp("resume"), n=1200, epochs=8)


def _numbers(result: dict) -> dict:
    out = {("base", r["id"]): (r["value"], r["ci"], r["verdict"]) for r in result["requirements"]}
    for d in result["defenses"]:
        out["defense", d["name"]] = d["model_sha256"]
        out.update({(d["name"], r["id"]): (r["value"], r["ci"], r["verdict"]) for r in d["requirements"]})
    out.update({("interaction", i["defense"], i["requirement"]): (i["delta"], i["delta_ci"], i["flagged"])
                for i in result["interactions"]})
    return out


def _command(model: Path, policy: Path, out: Path) -> list[str]:
    # --no-cache: the only copies a resumed run can reuse are the ones in its own job store
    return [*AMULET, str(model), "--policy", str(policy), "--out", str(out), "--profile", "quick", "--no-pdf",
            "--no-cache"]


@pytest.mark.slow
def test_an_audit_killed_mid_run_resumes_with_only_the_missing_jobs_and_the_same_numbers(small, tmp_path):
    policy = _policy(tmp_path)
    whole = subprocess.run(_command(small, policy, tmp_path / "whole"), capture_output=True, text=True)
    assert whole.returncode in (0, 1), whole.stderr
    expected = _numbers(json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert not (tmp_path / "whole" / STORE).exists()  # the store goes once the outputs are written

    out = tmp_path / "killed"
    store = out / STORE
    proc = subprocess.Popen(_command(small, policy, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(store.glob("*.pkl"))) < 3 and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = len(list(store.glob("*.pkl")))
    assert proc.returncode == -signal.SIGKILL and finished >= 3, "the audit finished before it could be killed"
    assert not (out / "results.json").exists()  # nothing half-written

    again = subprocess.run(_command(small, policy, out), capture_output=True, text=True)
    assert again.returncode in (0, 1), again.stderr
    resumed = json.loads((out / "results.json").read_text())
    assert resumed["environment"]["jobs_reused"] == finished  # every finished job, and nothing else, reused
    assert f"Resumed: {finished} finished job(s) reused" in again.stderr
    assert _numbers(resumed) == expected
    assert not store.exists()


def test_a_changed_policy_invalidates_exactly_the_jobs_it_touches(small, tmp_path):
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit

    model, data = load_model(small), load_data(small.with_name("model.data.yaml"))
    state = tmp_path / "state"

    def audit(policy: Path):
        before = set(state.glob("*.pkl"))
        result = run_audit(model, data, load_policy(str(policy)), seed=0, profile=PROFILES["quick"], state_dir=state)
        return result, set(state.glob("*.pkl")) - before

    first, made = audit(_policy(tmp_path))
    # 3 attack jobs on the audited model, the training-fidelity check, the positive control of the membership
    # attack, 1 defense job and 3 attack jobs on the defended model, and on each model the LiRA reference models
    assert len(made) == 11 and first.environment["jobs_reused"] == 0
    # a threshold is not an input of any job: everything reused, the verdict judged anew
    same, made = audit(_policy(tmp_path, threshold=0.99))
    assert made == set() and same.environment["jobs_reused"] == 11
    assert [r.value for r in same.requirements] == [r.value for r in first.requirements]
    assert next(r for r in same.requirements if r.id == "robust").verdict.value == "fail"
    # another evasion budget: the PGD job on each model runs again, nothing else
    other, made = audit(_policy(tmp_path, eps=0.2))
    assert len(made) == 2 and other.environment["jobs_reused"] == 9
    assert [r.value for r in other.requirements if r.id != "robust"] == \
           [r.value for r in first.requirements if r.id != "robust"]
    # a requirement added in front moves every job's place in the plan: the reused runs take their new ids
    shifted = tmp_path / "shifted.yaml"
    shifted.write_text(_policy(tmp_path).read_text().replace("requirements:\n", """requirements:
  - id: accuracy
    risk: evasion
    attack: {name: pgd, params: {eps: 0.3, norm: linf, steps: 10}}
    metric: clean_accuracy
    threshold: {min: 0.5}
""", 1))
    moved, made = audit(shifted)
    assert len(made) == 2 and moved.environment["jobs_reused"] == 11
    for result in (first, same, other, moved):
        runs = {run.id: run for run in result.runs}
        assert len(runs) == len(result.runs)  # ids unique
        assert all(runs[r.run].attack == r.attack for r in result.requirements)
    assert [r.value for r in moved.requirements if r.id != "accuracy"] == [r.value for r in first.requirements]


def test_reference_models_that_attacks_share_train_once_as_a_job_of_their_own(small, tmp_path):
    """LiRA and RMIA with the same reference models: on each model a copies job trains them into the cache before
    either attack runs, and both attacks load every one of them from there, with --jobs 2 as with one process."""
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit

    policy = tmp_path / "shared.yaml"
    policy.write_text(POLICY.replace("EPS", "0.1").replace("THRESHOLD", "0.5").replace(
        "{name: lira, params: {online: false}}", "{name: lira, params: {online: false, n_reference: 4}}").replace(
        "requirements:\n", """requirements:
  - id: rmia
    risk: membership_inference
    attack: {name: rmia, params: {n_reference: 4}}
    metric: auc
    threshold: {max: 0.6}
""", 1))
    model, data = load_model(small), load_data(small.with_name("model.data.yaml"))
    loaded = load_policy(str(policy))
    results = {}
    for jobs in (1, 2):
        state = tmp_path / f"state{jobs}"
        results[jobs] = run_audit(model, data, loaded, seed=0, profile=PROFILES["quick"], state_dir=state, jobs=jobs)
        made = len(list(state.glob("*.pkl")))
        assert made == 2 * 4 + 1 + 2 + 1 + 2  # 4 attack jobs per model, fidelity, 2 controls, 1 defense, 2 copies jobs
        runs = [r for r in results[jobs].runs if r.attack in ("lira", "rmia")]
        assert len(runs) == 4 and all(r.details["reference_models_from_cache"] == 4 for r in runs), \
            [(r.id, r.details["reference_models_from_cache"]) for r in runs]
    assert [(r.id, r.value, r.ci) for r in results[1].requirements] == \
           [(r.id, r.value, r.ci) for r in results[2].requirements]
