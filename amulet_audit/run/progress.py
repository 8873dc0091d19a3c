"""Progress bars for long work (rich, on stderr); silent with --quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress_display(*, quiet: bool) -> Iterator:
    """Yields progress(label, fraction) or None when silent."""
    if quiet:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                  transient=not sys.stderr.isatty(), console=Console(stderr=True), redirect_stdout=False) as bar:
        tasks: dict[str, int] = {}

        def update(label: str, fraction: float) -> None:
            if label not in tasks:
                tasks[label] = bar.add_task(label, total=1.0)
            bar.update(tasks[label], completed=fraction)

        yield update
