"""AES-256-GCM sealing of one value, bound to its place by associated data."""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from moorage.sealing.keyring import Key, Keyring

FORMAT = "v1"
NONCE_BYTES = 12  # 96-bit random nonce, the size GCM is built for


class SealedDataError(ValueError):
    """A sealed value cannot be opened. ``code`` says why; nothing secret is in the message.

    Codes: ``sealed_malformed`` (not a sealed value), ``sealed_key_unknown`` (sealed with a key
    the keyring does not hold), ``sealed_tampered`` (wrong place or altered: the associated
    data or ciphertext does not authenticate).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code


def seal(key: Key, plaintext: bytes, associated_data: bytes) -> str:
    """Seal ``plaintext`` with ``key``; it opens only with the same associated data."""
    nonce = os.urandom(NONCE_BYTES)
    body = AESGCM(key.material).encrypt(nonce, plaintext, associated_data)
    return sealed_prefix(key.id) + base64.urlsafe_b64encode(nonce + body).decode()


def key_id_of(sealed: str) -> str:
    """The id of the key that sealed ``sealed`` (for rotation bookkeeping)."""
    return _split(sealed)[0]


def sealed_prefix(key_id: str) -> str:
    """How every value sealed with ``key_id`` begins: lets a database count or find them
    (``LIKE 'prefix%'``) without opening any."""
    return f"{FORMAT}.{key_id}."


def is_sealed(text: str) -> bool:
    """Whether ``text`` has the shape of a sealed value (it may still not open)."""
    try:
        _split(text)
    except SealedDataError:
        return False
    return True


def open_sealed(keyring: Keyring, sealed: str, associated_data: bytes) -> bytes:
    """Open a value sealed by :func:`seal`; raise :class:`SealedDataError` when it cannot."""
    key_id, blob = _split(sealed)
    key = keyring.get(key_id)
    if key is None:
        raise SealedDataError(
            f"The value was sealed with key {key_id!r}, which is not in the keyring.",
            code="sealed_key_unknown",
        )
    try:
        return AESGCM(key.material).decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], associated_data
        )
    except InvalidTag:
        raise SealedDataError(
            "The sealed value does not belong here or was altered; it cannot be opened.",
            code="sealed_tampered",
        ) from None


def _split(sealed: str) -> tuple[str, bytes]:
    parts = sealed.split(".")
    if len(parts) != 3 or parts[0] != FORMAT:
        raise SealedDataError("This is not a sealed value.", code="sealed_malformed")
    try:
        blob = base64.urlsafe_b64decode(parts[2])
    except (binascii.Error, ValueError):
        raise SealedDataError("This is not a sealed value.", code="sealed_malformed") from None
    if len(blob) < NONCE_BYTES + 16:
        raise SealedDataError("This is not a sealed value.", code="sealed_malformed")
    return parts[1], blob
