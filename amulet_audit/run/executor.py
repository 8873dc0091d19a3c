"""Executors run the audit's jobs (`run.graph`): `submit(i, task)` hands over a job, `next_done()` returns
(i, output) pairs in completion order. Tasks and outputs are plain picklable data; `fn(task)` computes a job.

`LocalExecutor` runs jobs in this process (`jobs=1`, in submission order) or in a pool of local processes;
`run.ray_executor.RayExecutor` runs them as Ray tasks.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any


class LocalExecutor:
    """`jobs` = 1: each job runs in this process when its output is asked for (`next_done`), in submission order,
    with `progress` (the attacks' own progress bars); `jobs` > 1: a pool of `jobs` spawned processes, one torch
    thread each."""

    def __init__(self, fn: Callable[[Any], Any], jobs: int = 1, progress=None):
        self.fn, self.jobs, self.progress = fn, max(1, jobs), progress
        self.capacity = self.jobs  # jobs handed over at once: the graph keeps the rest, to pick by priority
        self._queue: deque = deque()
        self._pool = None
        self._futures: dict = {}

    def submit(self, i: int, task: Any) -> None:
        if self.jobs == 1:
            self._queue.append((i, task))
            return
        if self._pool is None:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor

            # spawn, not fork: torch's thread pools do not survive a fork
            self._pool = ProcessPoolExecutor(max_workers=self.jobs, mp_context=mp.get_context("spawn"),
                                             initializer=_worker_init)
        self._futures[self._pool.submit(self.fn, task)] = i

    def next_done(self) -> tuple[int, Any]:
        if self.jobs == 1:
            i, task = self._queue.popleft()
            return i, self.fn(task, self.progress)
        from concurrent.futures import FIRST_COMPLETED, wait

        done, _ = wait(self._futures, return_when=FIRST_COMPLETED)
        future = min(done, key=lambda f: self._futures[f])  # deterministic among jobs finishing together
        return self._futures.pop(future), future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _worker_init() -> None:
    import torch

    from amulet_audit.core.threads import set_cores

    torch.set_num_threads(1)  # N workers on N cores: one thread each
    set_cores(1)
    _die_with_parent()


def _die_with_parent() -> None:
    """On Linux, have the kernel end this worker when the audit's process dies, also by SIGKILL (an OOM kill),
    which gives the pool no chance to stop its workers: they would otherwise wait on their pipe, holding memory."""
    import ctypes
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    except OSError:  # another C library: the workers end with the pool as before
        pass
