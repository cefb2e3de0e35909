"""Sealing and opening credential secrets.

The keyring is :mod:`moorage.keys.keyring`; where a credential secret is bound is
:data:`moorage.keys.registry.CREDENTIAL_SECRET`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moorage.keys.errors import unavailable
from moorage.keys.registry import CREDENTIAL_SECRET
from moorage.sealing import SealedDataError

if TYPE_CHECKING:
    from moorage.credentials.models import Credential


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
