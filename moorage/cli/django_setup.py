"""Starting Django inside a CLI process (for the commands that run on the server machine)."""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from moorage.cli.output import fail


def setup_django() -> None:
    """Configure Django, turning a configuration error into a clean message and exit 2."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "moorage.config.settings")
    try:
        import django

        django.setup()
    except ImproperlyConfigured as exc:
        fail(f"Moorage is not configured correctly: {exc}", code="configuration", exit_code=2)


def migrate() -> None:
    """Bring the database schema up to date, quietly."""
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
