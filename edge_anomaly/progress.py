"""One look for every progress bar (reading, features, coreset, scoring).

rich comes with the training install; an edge box may not have it, and then the same calls
run without drawing anything.
"""

from __future__ import annotations

try:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
except ImportError:  # runtime-only install
    Console = None


class SilentProgress:
    """The subset of rich.progress.Progress that edge-anomaly uses, doing nothing."""

    def __enter__(self) -> SilentProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, description: str, total: float | None = None) -> int:
        return 0

    def advance(self, task: int, advance: float = 1) -> None:
        return None

    def update(self, task: int, **fields: object) -> None:
        return None


def make_progress():
    """A progress display on stderr (stdout stays clean for tables and JSON)."""
    if Console is None:
        return SilentProgress()
    return Progress(TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=Console(stderr=True))
