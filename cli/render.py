"""Rich rendering of stage results: summary tables and the next command to type."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
error_console = Console(stderr=True)


def summary_table(title: str, rows: dict[str, Any]) -> None:
    """Print a two-column summary table."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold cyan")
    table.add_column()
    for key, value in rows.items():
        table.add_row(str(key), str(value))
    console.print(table)


def next_commands(*commands: str) -> None:
    """Print the commands a user most likely types next."""
    console.print("[bold]next:[/bold]")
    for command in commands:
        console.print(f"  {command}", highlight=False, soft_wrap=True)


def error_line(message: str) -> None:
    """One error line on stderr."""
    error_console.print(f"[bold red]error:[/bold red] {message}", highlight=False, soft_wrap=True)
