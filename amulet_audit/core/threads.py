"""How many torch CPU threads to use. One rule for the whole program: small models run their many short
mini-batch steps fastest on one intra-op thread (more threads only synchronise, and on a busy machine they
oversubscribe the cores many times over); larger models keep torch's default."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

SMALL_MODEL = 1_000_000  # parameters


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
