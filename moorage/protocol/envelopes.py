"""Signed envelopes: the control plane signs every sync answer, the agent verifies it.

The MAC key derives from the region key (one secret to hand out); see ``docs/sync.md``,
"Signed envelopes".
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from moorage.sealing import Key

MAC_INFO = b"moorage/sync/mac/v1"


class TamperedPayload(ValueError):
    """An envelope failed its integrity check, or its payload does not parse."""


def mac_key(region_key: Key) -> bytes:
    """The HMAC key of a region, derived from its AES key (one secret to hand out)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MAC_INFO).derive(
        region_key.material
    )


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def sign(payload: dict[str, Any], region_key: Key) -> dict[str, str]:
    """Wrap ``payload`` in an envelope the region's agent can verify."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    tag = hmac.new(mac_key(region_key), body, hashlib.sha256).digest()
    return {"payload": _b64(body), "mac": _b64(tag)}


def verify(envelope: Any, region_key: Key) -> dict[str, Any]:
    """The payload of an envelope, or :class:`TamperedPayload` if anything is off."""
    if not isinstance(envelope, dict) or not isinstance(envelope.get("payload"), str) \
            or not isinstance(envelope.get("mac"), str):
        raise TamperedPayload("the answer is not a signed envelope")
    try:
        body = base64.urlsafe_b64decode(envelope["payload"])
        tag = base64.urlsafe_b64decode(envelope["mac"])
    except (binascii.Error, ValueError):
        raise TamperedPayload("the envelope is not valid base64") from None
    expected = hmac.new(mac_key(region_key), body, hashlib.sha256).digest()
    if not hmac.compare_digest(tag, expected):
        raise TamperedPayload("the payload failed its integrity check")
    try:
        payload = json.loads(body)
    except ValueError:
        raise TamperedPayload("the payload is not valid JSON") from None
    if not isinstance(payload, dict):
        raise TamperedPayload("the payload is not an object")
    return payload


def key_proof(region_key: Key, *, region: str) -> str:
    """Proof that an agent holds ``region_key``, sent with its snapshot acks: the control
    plane replaces a region's old key with a new one only once the agent proved it has it
    (``docs/sync.md``, "Rotating a region key").

    Only a holder of the key can compute it; replaying it can only complete a rotation to a
    key its agent already holds.
    """
    text = f"moorage/region-key-proof/v1|region={region}|key={region_key.id}".encode()
    return _b64(hmac.new(mac_key(region_key), text, hashlib.sha256).digest())


def key_proof_valid(region_key: Key, *, region: str, proof: str) -> bool:
    """Whether ``proof`` is :func:`key_proof` of ``region_key`` for ``region``."""
    return hmac.compare_digest(proof.encode(), key_proof(region_key, region=region).encode())
