"""Console output: rich progress on stderr, so stdout stays clean for --json."""

from __future__ import annotations

import contextlib
import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

console = Console(stderr=True, highlight=False)


def _quiet() -> bool:
    return bool(os.environ.get("EDGELM_QUIET"))


def progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[status]}"), console=console,
                    disable=_quiet(), transient=not sys.stderr.isatty())


def track(iterable, description: str, total: int | None = None):
    """Iterate with a progress bar (the one helper long loops use)."""
    total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
    with progress() as bar:
        task = bar.add_task(description, total=total, status="")
        for item in iterable:
            yield item
            bar.advance(task)


@contextlib.contextmanager
def step(description: str):
    """A spinner for one long call that has no natural progress count (export, conversion)."""
    with progress() as bar:
        task = bar.add_task(description, total=None, status="")
        yield lambda status: bar.update(task, status=status)


def info(message: str) -> None:
    if not _quiet():
        console.print(message)
