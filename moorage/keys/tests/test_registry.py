"""Invariant I11: every sealed field of every model is in the one registry that key rotation,
``moorage keys list`` and ``retire`` walk, so none is left behind by a rotation.

Three nets: every :class:`SealedTextField` of every model is registered; a text field named
like a secret must be a ``SealedTextField``; and a database holding a value in every sealed
field has no sealed-looking value anywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import pytest
from django.apps import apps
from django.db import models

from moorage.keys.fields import SealedTextField
from moorage.keys.registry import SEALED_FIELDS
from moorage.sealing import is_sealed
from moorage.testing.sealed import SealedWorld

REGISTERED = {sealed.label for sealed in SEALED_FIELDS}
# Names that say "this column holds a secret": such a text column must be sealed.
SECRET_WORDS = ("secret", "sealed", "password", "private_key")
# ...unless it holds nothing that could be opened.
NOT_SEALED = {"accounts.User.password": "a one-way hash (Django's password hashers)"}


def unregistered_sealed_fields(candidates: Iterable[type[models.Model]]) -> list[str]:
    """``app.Model.field`` of every ``SealedTextField`` missing from the registry."""
    return sorted(
        f"{model._meta.label}.{f.name}" for model in candidates
        for f in model._meta.get_fields()
        if isinstance(f, SealedTextField) and f"{model._meta.label}.{f.name}" not in REGISTERED
    )


def secret_named_text_fields(candidates: Iterable[type[models.Model]]) -> list[str]:
    """Text columns named like a secret that are not ``SealedTextField`` (a boolean named
    ``secret``, saying whether a value is one, is not a text column)."""
    return sorted(
        f"{model._meta.label}.{f.name}" for model in candidates
        for f in model._meta.get_fields()
        if isinstance(f, models.CharField | models.TextField)
        and not isinstance(f, SealedTextField)
        and any(word in f.name.lower() for word in SECRET_WORDS)
        and f"{model._meta.label}.{f.name}" not in NOT_SEALED
    )


def test_every_sealed_field_of_every_model_is_registered() -> None:
    assert unregistered_sealed_fields(apps.get_models()) == []


def test_every_registered_field_is_a_sealed_field() -> None:
    for sealed in SEALED_FIELDS:
        assert isinstance(sealed.model._meta.get_field(sealed.field), SealedTextField), \
            sealed.label
    assert len(REGISTERED) == len(SEALED_FIELDS)


def test_text_fields_named_like_secrets_are_sealed_fields() -> None:
    assert secret_named_text_fields(apps.get_models()) == []


def test_the_checks_catch_a_model_that_gains_a_sealed_field() -> None:
    """The nets above do fail: a model (of an app that is not installed, so it stays out of
    every other test) with an unregistered sealed field and a plain text field named like a
    secret."""

    class Gained(models.Model):
        token_sealed = SealedTextField()
        private_key = models.TextField()

        class Meta:
            app_label = "keys_registry_test"

        def __str__(self) -> str:
            return "gained"

    assert unregistered_sealed_fields([Gained]) == ["keys_registry_test.Gained.token_sealed"]
    assert secret_named_text_fields([Gained]) == ["keys_registry_test.Gained.private_key"]


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
        try:
            decoded = json.loads(value)
        except ValueError:
            return
        if not isinstance(decoded, str):
            yield from _strings(decoded)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


@pytest.mark.django_db
def test_no_sealed_value_lives_outside_the_registry(sealed_world: SealedWorld) -> None:
    found: set[str] = set()
    for model in apps.get_models(include_auto_created=True):
        columns = [f for f in model._meta.concrete_fields
                   if isinstance(f, models.CharField | models.TextField | models.JSONField)]
        if not columns:
            continue
        for row in model._default_manager.values_list(*(f.attname for f in columns)):
            for column, value in zip(columns, row, strict=True):
                if any(is_sealed(text) for text in _strings(value)):
                    found.add(f"{model._meta.label}.{column.name}")
    # Every registered field holds a value in this world, and nothing else looks sealed.
    assert found == REGISTERED
