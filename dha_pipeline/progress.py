"""One rich progress-bar style for every long step, and plain lines where no one watches a terminal.

On a terminal, long steps show live rich progress bars. When stderr is a file or a pipe (CI, nohup,
a log), live bars are off: rich would cut their last frame at 80 columns. Progress is reported by
whole plain lines instead (`log_line`), which are never wrapped or cut.
"""

from __future__ import annotations

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
