"""One look for every progress bar (reading, features, coreset, scoring).

rich comes with the training install; an edge box may not have it, and then the same calls
run without drawing anything.
"""

from __future__ import annotations

try:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text
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


def count_text(completed: float, total: float | None, finished: bool) -> str:
    """What a bar says of its count: ``7/10`` where the total is known; ``209`` where it is not (frames of a
    video); for a single step (no count, or a total of 1) nothing while it runs and ``done`` once it has."""
    if total is not None and total != 1:
        return f"{int(completed)}/{int(total)}"
    if total is None and completed:
        return f"{int(completed)}"
    return "done" if finished else ""


if Console is not None:
    class CountColumn(ProgressColumn):
        """:func:`count_text` as a column: no ``80/?`` nor ``1/1`` on the screen."""

        def render(self, task) -> Text:
            return Text(count_text(task.completed, task.total, task.finished), style="progress.download")

    class ClosingProgress(Progress):
        """Closes the uncounted bars when the display ends well: a step or a bar of unknown total then
        shows a full bar and ``done`` (or its count) instead of an empty one with ``0/?``."""

        def __exit__(self, *exc: object) -> None:
            if exc[0] is None:
                for task in self.tasks:
                    if task.total is None:
                        done = max(task.completed, 1)
                        self.update(task.id, total=done, completed=done)
            super().__exit__(*exc)


def make_progress():
    """A progress display on stderr (stdout stays clean for tables and JSON)."""
    if Console is None:
        return SilentProgress()
    return ClosingProgress(TextColumn("{task.description:<28}"), BarColumn(), CountColumn(),
                           TimeElapsedColumn(), console=Console(stderr=True))
