"""Sealing secrets with AES-256-GCM under a rotatable keyring, without Django.

A sealed value is text: ``v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>``. The key id
lets several keys be readable while one is primary, so the master key can be rotated and
everything re-sealed without downtime. The associated data binds a ciphertext to where it
belongs (account, credential, field...), so a value copied to another row does not open.

Both the control plane and the region agent use this package.
"""

from moorage.sealing.aead import (
    SealedDataError,
    is_sealed,
    key_id_of,
    open_sealed,
    seal,
    sealed_prefix,
)
from moorage.sealing.keyring import Key, Keyring, KeyringError, generate_key, parse_keys

__all__ = [
    "Key",
    "Keyring",
    "KeyringError",
    "SealedDataError",
    "generate_key",
    "is_sealed",
    "key_id_of",
    "open_sealed",
    "parse_keys",
    "seal",
    "sealed_prefix",
]
