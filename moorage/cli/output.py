"""Terminal output shared by the commands: rich on stdout for results, stderr for notes."""

from __future__ import annotations

from typing import NoReturn

import click
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def fail(message: str, *, code: str | None = None, exit_code: int = 1) -> NoReturn:
    """Print an error a person can act on and leave with ``exit_code``."""
    suffix = f" [dim]({code})[/dim]" if code else ""
    err_console.print(f"[bold red]Error:[/bold red] {message}{suffix}", highlight=False)
    raise click.exceptions.Exit(exit_code)
