"""The job graph on Ray: a local Ray with two CPUs gives the local executor's numbers."""

from __future__ import annotations

import pytest

from conftest import ONE_DEFENSE

ray = pytest.importorskip("ray")


@pytest.mark.slow
def test_ray_executor_gives_the_local_executors_numbers(tabular, tmp_path):
    from amulet_audit.core.attack import PROFILES
    from amulet_audit.inputs.data import load_data
    from amulet_audit.inputs.model import load_model
    from amulet_audit.policy import load_policy
    from amulet_audit.run import run_audit
    from amulet_audit.training.cache import ModelCache

    model, data = load_model(tabular), load_data(tabular.with_name("model.data.yaml"))
    loaded = load_policy(str(ONE_DEFENSE))

    def audit(**kw):
        return run_audit(model, data, loaded, seed=0, profile=PROFILES["quick"], **kw)

    local = audit(cache=ModelCache(tmp_path / "local-cache"))
    remote = audit(executor="ray", jobs=2)  # a local Ray with num_cpus=2, shut down afterwards
    assert not ray.is_initialized()
    assert remote.environment["executor"] == "ray"

    def numbers(result):
        rows = [(r.id, r.value, r.ci, r.verdict) for r in result.requirements]
        rows += [(d.name, d.model_sha256, [(r.id, r.value, r.ci) for r in d.requirements]) for d in result.defenses]
        rows += [(i.defense, i.requirement, i.delta, i.delta_ci, i.flagged) for i in result.interactions]
        return rows

    assert numbers(remote) == numbers(local)
    # workers loaded content-addressed copies of the inputs from the object store, not the submitter's paths
    import tempfile
    from pathlib import Path

    copies = list((Path(tempfile.gettempdir()) / "amulet-audit-inputs").glob(f"*/{tabular.name}"))
    assert any(c.read_bytes() == tabular.read_bytes() and c.parent != tabular.parent for c in copies)


def test_ray_address_without_ray_executor_is_refused(tabular, tmp_path):
    import subprocess

    from conftest import AMULET

    done = subprocess.run([*AMULET, str(tabular), "--policy", str(ONE_DEFENSE), "--out", str(tmp_path / "o"),
                           "--ray-address", "auto"], capture_output=True, text=True)
    assert done.returncode == 2 and "needs --executor ray" in done.stderr and "Traceback" not in done.stderr


def test_an_address_where_no_cluster_answers_is_refused_quickly(tabular, tmp_path):
    import subprocess

    from conftest import AMULET

    # Ray itself would retry for minutes: the audit gives up at once (a hang fails the test at the timeout)
    done = subprocess.run([*AMULET, str(tabular), "--policy", str(ONE_DEFENSE), "--out", str(tmp_path / "o"),
                           "--executor", "ray", "--ray-address", "ray://127.0.0.1:1"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2 and "nothing answers at 127.0.0.1:1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # with no --ray-address Ray connects to $RAY_ADDRESS: that cluster is checked the same way, and named
    import os

    done = subprocess.run([*AMULET, str(tabular), "--policy", str(ONE_DEFENSE), "--out", str(tmp_path / "e"),
                           "--executor", "ray"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "RAY_ADDRESS": "127.0.0.1:1"})
    assert done.returncode == 2 and "RAY_ADDRESS=127.0.0.1:1: nothing answers" in done.stderr, done.stderr
