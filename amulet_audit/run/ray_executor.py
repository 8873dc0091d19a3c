"""Running the audit's job graph (`run.graph`) as Ray tasks, on an existing cluster or a local one.

`ray` is an optional extra (`pip install amulet-audit[ray]`). Workers never read the submitter's paths: the model
file, the data spec with its data file, and the policy (merged with what it extends) travel once through Ray's
object store as content-addressed bytes; each worker writes them under its own temporary folder, keyed by their
digest, and loads them from there once. Trained copies are cached in the worker's own cache folder, so a defended
model made on one node is made again (deterministically, from the same seed) on another that needs it.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from amulet_audit.core.errors import InputError


def bundle(model_path: str, data_path: str, policy: Any, data_file: str, cache: str | None = None) -> dict[str, Any]:
    """The audit's inputs as bytes: {"digest", "model": (file name, bytes), "spec": (file name, bytes, data file
    name, bytes), "policy": JSON text of the merged policy, "cache": the workers' cache folder name}. `data_file`:
    the data file the spec names (resolved); `cache`: the audit's cache folder (None: a cache for this audit only)."""
    import yaml

    model = Path(model_path)
    spec = Path(data_path)
    source = Path(data_file)
    text = yaml.safe_load(spec.read_text(encoding="utf-8"))
    text["source"]["path"] = source.name  # beside the spec on the worker
    spec_bytes = yaml.safe_dump(text, sort_keys=False, allow_unicode=True).encode()
    merged = policy.model_dump(mode="json", exclude_none=True)
    merged.pop("extends", None)
    out = {"model": (model.name, model.read_bytes()), "spec": (spec.name, spec_bytes, source.name, source.read_bytes()),
           "policy": json.dumps(merged)}
    h = hashlib.sha256()
    for part in (out["model"][1], spec_bytes, out["spec"][3], out["policy"].encode()):
        h.update(hashlib.sha256(part).digest())
    out["digest"] = h.hexdigest()
    # workers cache trained copies per audit cache (the submitter's folder, or this audit alone): never across
    # audits the user asked to keep apart (another --cache-dir, --no-cache)
    import uuid

    out["cache"] = hashlib.sha256((cache or uuid.uuid4().hex).encode()).hexdigest()[:16]
    return out


def materialise(inputs_bundle: dict[str, Any]) -> dict[str, str]:
    """Write a bundle under this machine's temporary folder (once per digest): the local paths of the model, the
    data spec and the policy, and a local cache folder for trained copies. The folder is the worker's user's alone
    (mode 0700): it holds the audit's training data."""
    base = Path(tempfile.gettempdir()) / "amulet-audit-inputs"
    base.mkdir(mode=0o700, exist_ok=True)
    base.chmod(0o700)
    root = base / inputs_bundle["digest"]
    done = root / ".complete"
    if not done.exists():
        from amulet_audit.core.atomic import write_bytes_atomic

        name, data = inputs_bundle["model"]
        write_bytes_atomic(root / name, data)
        spec_name, spec, data_name, data_bytes = inputs_bundle["spec"]
        write_bytes_atomic(root / data_name, data_bytes)
        write_bytes_atomic(root / spec_name, spec)
        write_bytes_atomic(root / "policy.yaml", inputs_bundle["policy"].encode())
        done.touch()
    return {"model_path": str(root / inputs_bundle["model"][0]), "data_path": str(root / inputs_bundle["spec"][0]),
            "policy_path": str(root / "policy.yaml"), "cache_root": str(root / "cache" / inputs_bundle["cache"])}


def _run_on_worker(inputs_bundle: dict[str, Any], task: Any) -> Any:
    from amulet_audit.run.jobs import run_task

    local = materialise(inputs_bundle)
    return run_task(replace(task, inputs=replace(task.inputs, **local)))


def _reachable(address: str | None, timeout: float = 5.0, env: bool = False) -> None:
    """Raise InputError (one sentence naming where the address came from: --ray-address, or the environment's
    RAY_ADDRESS when `env`) when a cluster address ("ray://host:port" or "host:port") does not accept a TCP
    connection within `timeout` seconds: Ray itself would keep retrying for minutes. None and "auto" pass."""
    import socket

    if not address or address == "auto":
        return
    where = f"RAY_ADDRESS={address}" if env else f"--ray-address {address}"
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"{where}: expected ray://HOST:PORT, HOST:PORT or auto.")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"{where}: nothing answers at {host}:{port} ({exc}); check the cluster's "
                         "head address and port (Ray Client: 10001, GCS: 6379).") from None


class RayExecutor:
    """The executor interface of `run.executor.LocalExecutor` (`submit`, `next_done`, `close`) over Ray tasks, one
    CPU each. `address`: a cluster's address ("ray://host:10001", "auto"); None starts a local Ray with `num_cpus`
    CPUs (all of this machine's when None) and shuts it down on `close`. Raises InputError with the fix when `ray`
    is not installed or the cluster cannot be reached."""

    def __init__(self, inputs_bundle: dict[str, Any], *, address: str | None = None, num_cpus: int | None = None,
                 gpu: bool = False):
        try:
            import ray
        except ImportError:
            raise InputError("--executor ray needs Ray: pip install 'amulet-audit[ray]' (or pip install ray).") from None
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            import logging

            # Ray connects to $RAY_ADDRESS when given no address (and for "auto"): that cluster must answer too
            from_env = os.environ.get("RAY_ADDRESS", "") if address in (None, "", "auto") else ""
            _reachable(address)
            _reachable(from_env, env=True)
            address = address or from_env or None

            try:
                ray.init(address=address, num_cpus=None if address else num_cpus, include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING, configure_logging=False)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                raise InputError(f"--ray-address {address}: cannot connect to a Ray cluster ({exc}); check the address "
                                 "(e.g. ray://head:10001, or auto on a cluster node).") from None
            self._started = True
        # jobs handed to Ray at once: one per CPU of the cluster (per GPU with `gpu`: each job then holds one), the
        # rest kept by the graph to pick by priority
        self.capacity = max(1, int(ray.cluster_resources().get("GPU" if gpu else "CPU", 1)))
        self._bundle = ray.put(inputs_bundle)
        self._remote = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0, max_retries=2)(_run_on_worker)
        self._refs: dict[Any, int] = {}

    def submit(self, i: int, task: Any) -> None:
        self._refs[self._remote.remote(self._bundle, task)] = i

    def next_done(self) -> tuple[int, Any]:
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        ref = ready[0]
        return self._refs.pop(ref), self._ray.get(ref)

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=True)
        self._refs.clear()
        if self._started:
            self._ray.shutdown()
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
