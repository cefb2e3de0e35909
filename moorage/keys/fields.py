"""The column type of values sealed under the control plane's keyring."""

from __future__ import annotations

from typing import Any

from django.db import models


class SealedTextField(models.TextField):
    """Text holding a value sealed under the control plane's keyring (``v1.<key id>.…``).

    The type is what marks a sealed column: every field of this type must be listed in
    :mod:`moorage.keys.registry`, so key rotation, ``moorage keys list`` and ``retire`` see
    every sealed value (invariant I11; ``moorage/keys/tests/test_registry.py`` fails when one
    is missing). In the database it is a plain text column and it deconstructs as one, so
    marking a column changes no schema and needs no migration.
    """

    def deconstruct(self) -> Any:
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.TextField", args, kwargs
