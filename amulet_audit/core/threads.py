"""How many torch CPU threads to use. One rule for the whole program: small models run their many short
mini-batch steps fastest on one intra-op thread (more threads only synchronise, and on a busy machine they
oversubscribe the cores many times over); larger models keep torch's default. Work that is large per operation
even for a small model (K convolutional models trained at once) uses the cores this process may use (`cores`):
`--threads`, else the machine's cores shared among the `--jobs` processes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

SMALL_MODEL = 1_000_000  # parameters

_cores: list[int] = []  # set by the CLI (set_cores); a job's worker process uses one


def set_cores(n: int) -> None:
    """The number of cores this process may use for torch's threads."""
    _cores[:] = [max(1, int(n))]


def cores() -> int:
    """The cores this process may use (`set_cores`; torch's own thread count where none was set)."""
    import torch

    return _cores[0] if _cores else torch.get_num_threads()


def threads_for(module) -> int:
    import torch

    small = sum(p.numel() for p in module.parameters()) < SMALL_MODEL
    return 1 if small else torch.get_num_threads()


@contextmanager
def model_threads(module) -> Iterator[None]:
    """Run the block with `threads_for(module)` torch threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(min(before, threads_for(module)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextmanager
def all_cores() -> Iterator[None]:
    """Run the block with `cores()` torch threads, then restore the caller's setting."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cores())
    try:
        yield
    finally:
        torch.set_num_threads(before)
