"""Every value sealed under the control plane's keyring, listed once (invariant I11).

A :class:`SealedField` names one model's :class:`~moorage.keys.fields.SealedTextField` and the
associated data its values are sealed with: what a value is bound to (its account, row and
field), so a ciphertext copied to another row does not open. Sealing and opening go through
these entries, and so do re-sealing under a new primary key, counting the values each key
seals, and refusing to retire a key still in use (:mod:`moorage.keys.services`).

``moorage/keys/tests/test_registry.py`` fails when a model has a sealed field that is not in
:data:`SEALED_FIELDS`: a new sealed column is added here, with its associated data, or key
rotation would leave its values behind.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import models

from moorage.apps.models import EnvVar
from moorage.credentials.models import Credential, LoginToken
from moorage.keys import keyring
from moorage.regions.models import Region
from moorage.sealing import SealedDataError, sealed_prefix


@dataclass(frozen=True)
class SealedField:
    """One column of sealed values and how to seal, open and describe a row's value.

    ``aad`` gives a row's associated data (the row must have its id); ``describe`` names the
    value for people, without the value; ``related`` are the relations ``aad`` and
    ``describe`` read, fetched with the rows.
    """

    model: type[models.Model]
    field: str
    aad: Callable[[Any], bytes]
    describe: Callable[[Any], str]
    related: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """``app_label.Model.field``, as the registry test names it."""
        return f"{self.model._meta.label}.{self.field}"

    def rows(self) -> models.QuerySet[Any]:
        """Every row holding a value in this field (an empty field holds none)."""
        rows = self.model._default_manager.exclude(**{self.field: ""})
        return rows.select_related(*self.related) if self.related else rows

    def sealed_with(self, key_id: str) -> models.Q:
        """Rows whose value is sealed with ``key_id`` (found without opening any)."""
        return models.Q(**{f"{self.field}__startswith": sealed_prefix(key_id)})

    def seal(self, row: Any, plaintext: bytes) -> str:
        """``plaintext`` sealed with the primary key for ``row``; the caller stores it."""
        return keyring.seal_bytes(plaintext, self.aad(row))

    def open(self, row: Any) -> bytes:
        """The row's value in clear, or :class:`~moorage.sealing.SealedDataError`."""
        return keyring.open_bytes(getattr(row, self.field), self.aad(row))

    def open_text(self, row: Any) -> str:
        """:meth:`open` for a text value. A value that is not UTF-8 raises
        :class:`~moorage.sealing.SealedDataError` too (the codec's message would quote a byte
        of the secret)."""
        try:
            return self.open(row).decode("utf-8")
        except UnicodeDecodeError:
            raise SealedDataError("The opened value is not UTF-8 text.",
                                  code="sealed_malformed") from None


def _id(row: models.Model) -> int:
    if row.pk is None:
        raise ValueError(f"a {type(row).__name__} needs an id before its value can be sealed")
    return int(row.pk)


def _credential_aad(credential: Credential) -> bytes:
    return (f"moorage/credential/v1|account={credential.account_id}"
            f"|credential={_id(credential)}|field=secret").encode()


def _login_token_aad(token: LoginToken) -> bytes:
    credential = token.credential
    return (f"moorage/credential/v1|account={credential.account_id}"
            f"|credential={_id(credential)}|field=login_token").encode()


def _env_aad(variable: EnvVar) -> bytes:
    return (f"moorage/app-env/v1|account={variable.app.account_id}|app={variable.app_id}"
            f"|name={variable.name}").encode()


def _region_key_aad(region: Region, key_id: str) -> bytes:
    return f"moorage/region-key/v1|region={_id(region)}|key={key_id}".encode()


CREDENTIAL_SECRET = SealedField(
    Credential, "secret", aad=_credential_aad,
    describe=lambda c: f"the secret of credential {c.name!r} (id {c.pk})",
)
LOGIN_TOKEN = SealedField(
    LoginToken, "token", aad=_login_token_aad, related=("credential",),
    describe=lambda t: (f"the short-lived token of credential {t.credential.name!r} "
                        f"(id {t.credential_id})"),
)
APP_ENV_SECRET = SealedField(
    EnvVar, "sealed", aad=_env_aad, related=("app",),
    describe=lambda v: f"the secret value of {v.name} in app {v.app.name!r} (id {v.app_id})",
)
REGION_KEY = SealedField(
    Region, "key_sealed", aad=lambda r: _region_key_aad(r, r.key_id),
    describe=lambda r: f"the key {r.key_id!r} of region {r.slug!r}",
)
REGION_NEXT_KEY = SealedField(
    Region, "next_key_sealed", aad=lambda r: _region_key_aad(r, r.next_key_id),
    describe=lambda r: f"the new key {r.next_key_id!r} of region {r.slug!r} (rotation pending)",
)

REGION_REGISTRY_PASSWORD = SealedField(
    Region, "registry_password_sealed",
    aad=lambda r: f"moorage/region-registry/v1|region={_id(r)}|field=password".encode(),
    describe=lambda r: f"the password of region {r.slug!r}'s registry {r.registry}",
)

SEALED_FIELDS: tuple[SealedField, ...] = (
    CREDENTIAL_SECRET, LOGIN_TOKEN, APP_ENV_SECRET, REGION_KEY, REGION_NEXT_KEY,
    REGION_REGISTRY_PASSWORD,
)
