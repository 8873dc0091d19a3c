"""Executors run independent audit units (the baseline evaluation, one unit per defense).

`LocalExecutor` runs them in this process (`jobs=1`) or in a pool of local processes. A distributed
executor (e.g. Ray) implements the same `map`; units and their results are plain picklable data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol


class Executor(Protocol):
    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Results in completion order as (index, result) pairs."""


class LocalExecutor:
    def __init__(self, jobs: int = 1):
        self.jobs = max(1, jobs)

    def map(self, fn, items):
        items = list(items)
        if self.jobs == 1 or len(items) <= 1:
            for i, item in enumerate(items):
                yield i, fn(item)
            return
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        # spawn, not fork: torch's thread pools do not survive a fork
        with ProcessPoolExecutor(max_workers=min(self.jobs, len(items)), mp_context=mp.get_context("spawn"),
                                 initializer=_worker_init) as pool:
            futures = {pool.submit(fn, item): i for i, item in enumerate(items)}
            for future in as_completed(futures):
                yield futures[future], future.result()


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # N workers on N cores: one thread each
