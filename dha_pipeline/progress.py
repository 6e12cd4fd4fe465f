"""One rich progress-bar style for every long step, and plain lines where no one watches a terminal.

On a terminal, long steps show live rich progress bars. When stderr is a file or a pipe (CI, nohup,
a log), live bars are off: rich would cut their last frame at 80 columns. Progress is reported by
whole plain lines instead (`log_line`), which are never wrapped or cut. The training loop's per-epoch
bars (`EpochBars`) and its clock (`Stopwatch`) live here too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


def interactive() -> bool:
    """Is stderr a terminal (live progress bars), rather than a file or a pipe?"""
    return console.is_terminal


def progress_bar(*extra_columns: TextColumn) -> Progress:
    """A rich progress bar on stderr, with optional extra text columns; silent when not `interactive()`."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), *extra_columns, console=console,
                    disable=not interactive())


def log_line(text: str) -> None:
    """One whole line on stderr (above any live progress bar), never wrapped or cut."""
    console.print(text, soft_wrap=True, highlight=False, markup=False)


class Stopwatch:
    """Seconds of training: the run's total (`elapsed`, kept in checkpoints, agreed across ranks by `agree`)
    and the current epoch's (`epoch_seconds`). A lap counts everything since the last `start` or lap (a
    mid-epoch checkpoint included); what happens between an epoch's last lap and the next `start`
    (validation, the epoch's checkpoint, its logs) is not counted."""

    def __init__(self, agree: Callable[[float], float] = float) -> None:
        self.agree = agree
        self.elapsed = 0.0
        self.epoch_seconds = 0.0
        self.started = time.perf_counter()

    def start(self) -> None:
        """A new epoch starts now."""
        self.started, self.epoch_seconds = time.perf_counter(), 0.0

    def lap(self) -> float:
        """Count the time since the last start or lap into the epoch and the run; returns the epoch's seconds."""
        now = time.perf_counter()
        lap, self.started = now - self.started, now
        self.epoch_seconds += lap
        self.elapsed = self.agree(self.elapsed + lap)
        return self.epoch_seconds

    def spent(self, minutes: float) -> bool:
        """Has the run trained `minutes` (0: no such budget)?"""
        return bool(minutes) and self.elapsed >= 60 * minutes


class EpochBars:
    """A rich progress bar per epoch with live text columns (`fields`, e.g. loss and lr), on a terminal only:
    `live` says whether anyone watches, so the caller reads device values for the bar only then."""

    def __init__(self, columns: str, **fields: Any) -> None:
        self.progress = progress_bar(TextColumn(columns))
        self.fields = fields
        self.live = interactive()
        self.task: Any = None

    def __enter__(self) -> EpochBars:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)

    def start(self, description: str, steps: int, done: int, **fields: Any) -> None:
        """A bar for an epoch of `steps` steps, `done` of them already run (a resumed epoch)."""
        self.task = self.progress.add_task(description, total=steps, completed=done, **{**self.fields, **fields})

    def advance(self, **fields: Any) -> None:
        """One step done; the text columns show `fields`."""
        self.progress.update(self.task, advance=1, **fields)

    def finish(self, description: str, **fields: Any) -> None:
        """The epoch's bar, finished, now says `description`."""
        self.progress.update(self.task, description=description, **fields)
