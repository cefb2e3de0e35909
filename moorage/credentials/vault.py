"""Sealing and opening credential secrets and login tokens.

The keyring is :mod:`moorage.keys.keyring`; where a credential secret is bound is
:data:`moorage.keys.registry.CREDENTIAL_SECRET`, where an exchanged credential's short-lived
token is bound :data:`moorage.keys.registry.LOGIN_TOKEN`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moorage.keys.errors import unavailable
from moorage.keys.registry import CREDENTIAL_SECRET, LOGIN_TOKEN
from moorage.sealing import SealedDataError

if TYPE_CHECKING:
    from moorage.credentials.models import Credential, LoginToken


def seal_secret(credential: Credential, plaintext: str) -> str:
    """Seal ``plaintext`` for ``credential`` (which must already have an id)."""
    return CREDENTIAL_SECRET.seal(credential, plaintext.encode("utf-8"))


def open_secret(credential: Credential) -> str:
    """The credential's secret in clear. Call only at the moment of use; never keep it.

    Raises :class:`~moorage.keys.errors.SecretUnavailable` naming the credential when the
    secret cannot be opened.
    """
    try:
        return CREDENTIAL_SECRET.open_text(credential)
    except SealedDataError as exc:
        raise unavailable(CREDENTIAL_SECRET.describe(credential), exc,
                          credential_id=credential.pk) from None


def seal_login_token(token: LoginToken, plaintext: str) -> str:
    """Seal the short-lived token an exchange gave ``token.credential``; bound to the field
    ``login_token``, so it cannot pass for the credential's secret."""
    return LOGIN_TOKEN.seal(token, plaintext.encode("utf-8"))


def open_login_token(token: LoginToken) -> str:
    """An exchanged credential's current short-lived token in clear, for one use."""
    try:
        return LOGIN_TOKEN.open_text(token)
    except SealedDataError as exc:
        raise unavailable(LOGIN_TOKEN.describe(token), exc,
                          credential_id=token.credential_id) from None
