"""The one place that seals and opens credential secrets with the control plane's keyring.

The keyring comes from ``MOORAGE_KEYS`` or the key file in the data dir. A process keeps it
in memory; when it meets a key id it does not know (another process rotated the key file),
it reloads once, so ``moorage keys rotate`` works while the server keeps serving.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from django.conf import settings

from moorage.errors import ApplicationError
from moorage.sealing import Keyring, SealedDataError, open_sealed, seal
from moorage.sealing.keyring import KeyFile

if TYPE_CHECKING:
    from moorage.credentials.models import Credential

SECRET_FIELD = "secret"  # noqa: S105 - a field name
_lock = threading.Lock()
_cached: tuple[object, Keyring] | None = None


class SecretUnavailable(ApplicationError):
    """A sealed secret cannot be opened (key missing, or the value does not belong here)."""

    status = 500
    default_code = "secret_unavailable"


def _source() -> object:
    return (tuple(k.encoded() for k in settings.MOORAGE_KEYS or ()), settings.MOORAGE_KEY_FILE)


def keyring(*, reload: bool = False) -> Keyring:
    """The control plane's keyring (primary key first)."""
    global _cached
    source = _source()
    with _lock:
        if reload or _cached is None or _cached[0] != source:
            if settings.MOORAGE_KEYS:
                ring = Keyring(settings.MOORAGE_KEYS)
            else:
                ring = KeyFile(settings.MOORAGE_KEY_FILE).load()
            _cached = (source, ring)
        return _cached[1]


def associated_data(*, account_id: int, credential_id: int, field: str) -> bytes:
    """What a sealed secret is bound to: copied to another row or field, it will not open."""
    text = f"moorage/credential/v1|account={account_id}|credential={credential_id}|field={field}"
    return text.encode()


def seal_value(plaintext: str, aad: bytes) -> str:
    """Seal any secret value with the primary key, bound to ``aad`` (where it belongs)."""
    return seal(keyring().primary, plaintext.encode("utf-8"), aad)


def open_value(sealed: str, aad: bytes) -> str:
    """Open a value sealed by :func:`seal_value`; reload the keyring once on an unknown key.

    Raises :class:`SealedDataError` (whose message holds nothing secret).
    """
    try:
        return open_sealed(keyring(), sealed, aad).decode("utf-8")
    except SealedDataError as exc:
        if exc.code != "sealed_key_unknown":
            raise
        return open_sealed(keyring(reload=True), sealed, aad).decode("utf-8")


def _credential_aad(credential: Credential) -> bytes:
    return associated_data(
        account_id=credential.account_id, credential_id=credential.pk, field=SECRET_FIELD
    )


def seal_secret(credential: Credential, plaintext: str) -> str:
    """Seal ``plaintext`` for ``credential`` (which must already have an id)."""
    if credential.pk is None:
        raise ValueError("a credential needs an id before its secret can be sealed")
    return seal_value(plaintext, _credential_aad(credential))


def open_secret(credential: Credential) -> str:
    """The credential's secret in clear. Call only at the moment of use; never keep it."""
    try:
        return open_value(credential.secret, _credential_aad(credential))
    except SealedDataError as exc:
        raise SecretUnavailable(
            f"The secret of credential {credential.name!r} cannot be opened: {exc}",
            code=exc.code,
            detail={"credential_id": credential.pk},
        ) from None
