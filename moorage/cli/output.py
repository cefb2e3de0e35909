"""Terminal output shared by the commands: rich on stdout for results, stderr for notes."""

from __future__ import annotations

from typing import NoReturn

import click
from rich.console import Console
from rich.markup import escape

console = Console()
err_console = Console(stderr=True)


def fail(message: str, *, code: str | None = None, exit_code: int = 1) -> NoReturn:
    """Print an error a person can act on and leave with ``exit_code``.

    ``message`` is plain text, never markup: it often quotes names people typed or a server's
    words, and a ``[`` in them must print as itself.
    """
    suffix = f" [dim]({escape(code)})[/dim]" if code else ""
    err_console.print(f"[bold red]Error:[/bold red] {escape(message)}{suffix}", highlight=False)
    raise click.exceptions.Exit(exit_code)
