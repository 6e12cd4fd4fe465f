"""Rich rendering of stage results: summary tables and the next command to type.

On a terminal, summaries are rich tables. When stdout is a file or a pipe, rich would cut tables at
80 columns, so each summary is printed as whole `key: value` lines instead.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
error_console = Console(stderr=True)
UNLIMITED_WIDTH = 100_000


def summary_table(title: str, rows: dict[str, Any]) -> None:
    """A two-column summary: a table on a terminal, plain lines elsewhere."""
    if not console.is_terminal:
        console.print(title, soft_wrap=True, highlight=False, markup=False)
        for key, value in rows.items():
            console.print(f"  {key}: {value}", soft_wrap=True, highlight=False, markup=False)
        return
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in rows.items():
        table.add_row(str(key), str(value))
    console.print(table)


def print_table(table: Table) -> None:
    """A rich table, never cut: at its natural width when stdout is not a terminal."""
    if console.is_terminal:
        console.print(table)
        return
    natural = Console(width=UNLIMITED_WIDTH).measure(table).maximum
    Console(width=max(natural, 80)).print(table)


def next_commands(*commands: str) -> None:
    """Print the commands a user most likely types next."""
    console.print("[bold]next:[/bold]")
    for command in commands:
        console.print(f"  {command}", highlight=False, soft_wrap=True)


def silence() -> None:
    """Print nothing but errors from here on (every torchrun process but rank 0)."""
    from dha_pipeline.progress import console as progress_console

    console.quiet = True
    progress_console.quiet = True


def warning_line(message: str) -> None:
    """One warning line on stderr (the command goes on)."""
    error_console.print(f"[bold yellow]warning:[/bold yellow] {message}", highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """One error line on stderr."""
    error_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
