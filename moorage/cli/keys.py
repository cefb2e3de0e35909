"""``moorage keys``: the keyring that seals credential secrets, on the server machine.

The keyring is ``MOORAGE_KEYS`` when set, else the key file in the data directory. Rotation
makes a new primary key and re-seals every secret with it in small batches while the server
keeps serving; an old key is retired only once nothing is sealed with it any more.
"""

from __future__ import annotations

import click
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from moorage.cli.django_setup import setup_django
from moorage.cli.output import console, err_console, fail
from moorage.sealing import KeyringError, generate_key

_ENV_PROCEDURE = (
    "MOORAGE_KEYS is in charge of the keyring, so Moorage cannot add a key itself. To rotate:\n"
    "  1. moorage keys generate            (prints a new id:base64 key)\n"
    "  2. put it FIRST in MOORAGE_KEYS, keeping the old keys after it, and restart every\n"
    "     Moorage process (server, worker, agents that hold the control plane's keys)\n"
    "  3. moorage keys rotate              (re-seals every secret with the new primary)\n"
    "  4. remove the old keys from MOORAGE_KEYS once 'moorage keys list' shows 0 for them."
)


def _say(message: str, *, err: bool = False) -> None:
    """A sentence for a person (rich markup), never hard-wrapped: scripts grep for it."""
    (err_console if err else console).print(message, highlight=False, soft_wrap=True)


@click.group()
def keys() -> None:
    """Manage the keyring that seals credential secrets (server machine)."""


@keys.command("generate")
@click.option("--id", "key_id", help="The key id (default: random, like k1a2b3c4d).")
def keys_generate(key_id: str | None) -> None:
    """Print a new key as id:base64, for MOORAGE_KEYS. Only the key goes to standard output."""
    try:
        key = generate_key(key_id)
    except KeyringError as exc:
        fail(str(exc), code="key_id_invalid")
    _say("A new key (keep it secret); put it first in MOORAGE_KEYS to make it the primary:",
         err=True)
    click.echo(key.encoded())


def _source() -> str:
    from django.conf import settings

    if settings.MOORAGE_KEYS:
        return "MOORAGE_KEYS"
    return f"key file {escape(str(settings.MOORAGE_KEY_FILE))}"


@keys.command("list")
def keys_list() -> None:
    """Show the keys, which one is primary, and how many secrets each one seals."""
    setup_django()
    from rich.table import Table

    from moorage.credentials import services, vault
    from moorage.credentials.models import Credential

    try:
        ring = vault.keyring(reload=True)
    except KeyringError as exc:
        fail(str(exc), code="keyring_invalid")
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("Key id", style="bold", no_wrap=True)
    table.add_column("Primary", no_wrap=True)
    table.add_column("Secrets sealed", justify="right")
    counted = 0
    for key in ring.keys:
        sealed = services.credentials_sealed_with(key.id)
        counted += sealed
        table.add_row(key.id, "[green]primary[/green]" if key.id == ring.primary.id else "",
                      str(sealed))
    _say(f"Keyring from {_source()}:")
    console.print(table, highlight=False)
    unknown = Credential.objects.count() - counted
    if unknown:
        _say(f"[bold red]{unknown} secret(s) are sealed with a key that is not in this "
             "keyring and cannot be opened.[/bold red] Put the missing key back.", err=True)


@keys.command("rotate")
def keys_rotate() -> None:
    """Make a new primary key (key file) and re-seal every secret with the primary key.

    Safe to run again after an interruption: it re-seals only what is not yet sealed with
    the primary key.
    """
    setup_django()
    from django.conf import settings

    from moorage.credentials import services
    from moorage.errors import ApplicationError

    if settings.MOORAGE_KEYS:
        _say(_ENV_PROCEDURE, err=True)
    columns = (TextColumn("Re-sealing secrets"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=err_console) as progress:
            task = progress.add_task("reseal", total=None)

            def advance(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            rotation = services.keyring_rotate(progress=advance)
    except (ApplicationError, KeyringError) as exc:
        code = exc.code if isinstance(exc, ApplicationError) else "keyring_invalid"
        message = exc.message if isinstance(exc, ApplicationError) else str(exc)
        fail(message, code=code)
    if rotation.added:
        _say(f"[green]✓[/green] New primary key [bold]{rotation.primary}[/bold] in "
             f"{escape(str(settings.MOORAGE_KEY_FILE))}.")
    elif settings.MOORAGE_KEYS:
        _say(f"Primary key [bold]{rotation.primary}[/bold] (from MOORAGE_KEYS).")
    else:
        _say(f"Resuming the rotation to primary key [bold]{rotation.primary}[/bold]: "
             "some secrets were still sealed with an older key.")
    _say(f"[green]✓[/green] Re-sealed {rotation.resealed} secret(s) with "
         f"{rotation.primary}.")
    if rotation.added:
        _say("Older keys stay readable; 'moorage keys retire ID' removes one. Keep a "
             "backup of the key file.")


@keys.command("retire")
@click.argument("key_id")
def keys_retire(key_id: str) -> None:
    """Remove a key from the key file once nothing is sealed with it."""
    setup_django()
    from django.conf import settings

    from moorage.credentials import services
    from moorage.errors import ApplicationError

    try:
        services.keyring_retire(key_id=key_id)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    except KeyringError as exc:
        fail(str(exc), code="keyring_invalid")
    _say(f"[green]✓[/green] Retired key [bold]{escape(key_id)}[/bold] from "
         f"{escape(str(settings.MOORAGE_KEY_FILE))}.")
