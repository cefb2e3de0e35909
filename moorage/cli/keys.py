"""``moorage keys``: the keyring that seals every secret at rest, on the server machine.

The keyring is ``MOORAGE_KEYS`` when set, else the key file in the data directory. It seals
every value listed in :mod:`moorage.keys.registry`: credential secrets, app secret env values,
region keys. Rotation makes a new primary key and re-seals all of them in small batches while
the server keeps serving; an old key is retired only once nothing is sealed with it any more.
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
    """Manage the keyring that seals every secret at rest (server machine)."""


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


@keys.command("list")
def keys_list() -> None:
    """Show the keys, which one is primary, and how many secrets each one seals (credential
    secrets, app secret env values and region keys alike)."""
    setup_django()
    from rich.table import Table

    from moorage.keys.keyring import describe_source
    from moorage.keys.services import keyring_usage

    try:
        usage = keyring_usage()
    except KeyringError as exc:
        fail(str(exc), code="keyring_invalid")
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("Key id", style="bold", no_wrap=True)
    table.add_column("Primary", no_wrap=True)
    table.add_column("Secrets sealed", justify="right")
    for key in usage.keys:
        table.add_row(key.id, "[green]primary[/green]" if key.primary else "", str(key.sealed))
    _say(f"Keyring from {escape(describe_source())}:")
    console.print(table, highlight=False)
    if usage.unknown:
        where = ", ".join(f"{label}: {count}" for label, count in usage.unknown_by_field.items())
        _say(f"[bold red]{usage.unknown} secret(s) are sealed with a key that is not in this "
             f"keyring and cannot be opened[/bold red] ({escape(where)}). Put the missing key "
             "back.", err=True)


@keys.command("rotate")
def keys_rotate() -> None:
    """Make a new primary key (key file) and re-seal every secret with the primary key.

    Safe to run again after an interruption: it re-seals only what is not yet sealed with
    the primary key. Exits 1 when a secret could not be opened (it is named, and left as it
    was).
    """
    setup_django()
    from django.conf import settings

    from moorage.errors import ApplicationError
    from moorage.keys import services

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
    if rotation.unopenable:
        _say(f"[bold red]{len(rotation.unopenable)} secret(s) could not be opened and were left "
             "as they are[/bold red]; their keys cannot be retired until they are:", err=True)
        for what in rotation.unopenable:
            _say(f"  - {escape(what)}", err=True)
        fail("Put the missing key back and run 'moorage keys rotate' again, or set those "
             "values again.", code="secret_unavailable")


@keys.command("retire")
@click.argument("key_id")
def keys_retire(key_id: str) -> None:
    """Remove a key from the key file once nothing is sealed with it."""
    setup_django()
    from django.conf import settings

    from moorage.errors import ApplicationError
    from moorage.keys import services

    try:
        services.keyring_retire(key_id=key_id)
    except ApplicationError as exc:
        fail(exc.message, code=exc.code)
    except KeyringError as exc:
        fail(str(exc), code="keyring_invalid")
    _say(f"[green]✓[/green] Retired key [bold]{escape(key_id)}[/bold] from "
         f"{escape(str(settings.MOORAGE_KEY_FILE))}.")
