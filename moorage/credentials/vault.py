"""Sealing and opening credential secrets, and the error when one cannot be opened.

The keyring is :mod:`moorage.keys.keyring`; where a credential secret is bound is
:data:`moorage.keys.registry.CREDENTIAL_SECRET`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from moorage.errors import ApplicationError
from moorage.keys.registry import CREDENTIAL_SECRET
from moorage.sealing import SealedDataError

if TYPE_CHECKING:
    from moorage.credentials.models import Credential


class SecretUnavailable(ApplicationError):
    """A sealed secret cannot be opened: the key it was sealed with is not in the keyring, or
    the value does not belong where it is. ``detail["reason"]`` is the sealing error's code
    (``sealed_key_unknown``, ``sealed_tampered``, ``sealed_malformed``).

    A conflict with the installation's state, not a bug: the message says what to do.
    """

    status = 409
    default_code = "secret_unavailable"


def unavailable(what: str, exc: SealedDataError, **detail: object) -> SecretUnavailable:
    """The error for ``what`` (a credential's secret, an env value...) failing to open, with
    what the operator does about it."""
    if exc.code == "sealed_key_unknown":
        advice = ("Put that key back in the keyring (MOORAGE_KEYS or the key file; "
                  "'moorage keys list' shows what is missing), or set the value again.")
    else:
        advice = "Set the value again."
    return SecretUnavailable(f"{what[:1].upper()}{what[1:]} cannot be opened: {exc} {advice}",
                             detail={"reason": exc.code, **detail})


def seal_secret(credential: Credential, plaintext: str) -> str:
    """Seal ``plaintext`` for ``credential`` (which must already have an id)."""
    return CREDENTIAL_SECRET.seal(credential, plaintext.encode("utf-8"))


def open_secret(credential: Credential) -> str:
    """The credential's secret in clear. Call only at the moment of use; never keep it."""
    try:
        return CREDENTIAL_SECRET.open_text(credential)
    except SealedDataError as exc:
        raise unavailable(CREDENTIAL_SECRET.describe(credential), exc,
                          credential_id=credential.pk) from None
