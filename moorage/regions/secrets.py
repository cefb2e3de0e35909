"""Region keys and region tokens: making them, keeping them sealed, checking them."""

from __future__ import annotations

import hashlib
import re
import secrets as random

from moorage.credentials import vault
from moorage.credentials.models import Credential
from moorage.protocol.associated_data import region_secret_aad
from moorage.protocol.constants import REGION_TOKEN_PREFIX
from moorage.regions.models import Region
from moorage.sealing import Key, SealedDataError, generate_key, open_sealed, seal

_TOKEN_RE = re.compile(r"^mrr_[A-Za-z0-9_-]{43}$")


def new_region_key(region_slug: str) -> Key:
    """A fresh AES-256 key for a region; its id names the region for the operator."""
    return generate_key(f"{region_slug[:20]}-{random.token_hex(3)}")


def _key_aad(region: Region) -> bytes:
    return f"moorage/region-key/v1|region={region.pk}|key={region.key_id}".encode()


def seal_region_key(region: Region, key: Key) -> str:
    """Seal a region key under the control plane's keyring (the region needs an id)."""
    region.key_id = key.id
    return seal(vault.keyring().primary, key.material, _key_aad(region))


def open_region_key(region: Region) -> Key:
    """The region's key in clear, for signing and sealing one answer."""
    try:
        material = open_sealed(vault.keyring(), region.key_sealed, _key_aad(region))
    except SealedDataError as exc:
        if exc.code != "sealed_key_unknown":
            raise
        # Another process rotated the key file: reload once, as the vault does.
        material = open_sealed(vault.keyring(reload=True), region.key_sealed, _key_aad(region))
    return Key(region.key_id, material)


def seal_for_region(region: Region, key: Key, credential: Credential) -> str:
    """The credential's secret, re-sealed so only this region's agent can open it."""
    plaintext = vault.open_secret(credential)
    aad = region_secret_aad(region=region.slug, account_id=credential.account_id,
                            credential_id=credential.pk, revision=credential.revision)
    return seal(key, plaintext.encode(), aad)


def new_region_token() -> str:
    return REGION_TOKEN_PREFIX + random.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_well_formed(token: str) -> bool:
    return bool(_TOKEN_RE.match(token))


def region_keys_reseal() -> int:
    """Re-seal every region key not sealed with the control plane's primary key."""
    primary = vault.keyring(reload=True).primary
    count = 0
    for region in Region.objects.exclude(key_sealed__startswith=f"v1.{primary.id}."):
        key = open_region_key(region)
        Region.objects.filter(pk=region.pk).update(key_sealed=seal_region_key(region, key))
        count += 1
    return count


def region_keys_sealed_with(key_id: str) -> int:
    """How many region keys are still sealed with the control plane key ``key_id``."""
    return Region.objects.filter(key_sealed__startswith=f"v1.{key_id}.").count()
