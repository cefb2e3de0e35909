"""Searching for a secret everywhere it must never be: the proof behind invariant I3."""

from __future__ import annotations

from pathlib import Path

from django.apps import apps
from django.db import connection


def database_text() -> str:
    """Every row of every Moorage and Django table, as text, for a substring search.

    Raw SQL, not the ORM: a field that decrypts or hides its value on read must not hide a
    plaintext that sits in the column.
    """
    parts: list[str] = []
    with connection.cursor() as cursor:
        for model in apps.get_models(include_auto_created=True):
            table = connection.ops.quote_name(model._meta.db_table)
            cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - table names from Django
            for row in cursor.fetchall():
                parts.append(" ".join(_as_text(value) for value in row))
    return "\n".join(parts)


def _as_text(value: object) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("latin-1")
    return str(value)


def files_containing(root: Path, secret: str) -> list[Path]:
    """Files under ``root`` whose bytes contain ``secret`` (e.g. a SQLite file, a data dir)."""
    needle = secret.encode()
    found = []
    for path in root.rglob("*"):
        if path.is_file() and needle in path.read_bytes():
            found.append(path)
    return found
