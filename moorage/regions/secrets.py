"""Region keys and region tokens: making them, keeping them sealed, checking them."""

from __future__ import annotations

import hashlib
import re
import secrets as random

from moorage.credentials.logins import current_login
from moorage.credentials.models import Credential
from moorage.errors import Conflict
from moorage.keys.errors import unavailable
from moorage.keys.registry import REGION_KEY, REGION_NEXT_KEY, REGION_REGISTRY_PASSWORD
from moorage.protocol.associated_data import region_registry_aad, region_secret_aad
from moorage.protocol.constants import REGION_TOKEN_PREFIX
from moorage.regions.models import Region
from moorage.sealing import Key, SealedDataError, generate_key, seal

_TOKEN_RE = re.compile(r"^mrr_[A-Za-z0-9_-]{43}$")


def new_region_key(region_slug: str) -> Key:
    """A fresh AES-256 key for a region; its id names the region for the operator."""
    return generate_key(f"{region_slug[:20]}-{random.token_hex(3)}")


def seal_region_key(region: Region, key: Key) -> str:
    """Seal a region key under the control plane's keyring (the region needs an id)."""
    region.key_id = key.id
    return REGION_KEY.seal(region, key.material)


def seal_next_region_key(region: Region, key: Key) -> str:
    """Seal the key a pending rotation hands the region's agent."""
    region.next_key_id = key.id
    return REGION_NEXT_KEY.seal(region, key.material)


def open_region_key(region: Region) -> Key:
    """The region's key in clear, for signing and sealing one answer.

    Raises :class:`~moorage.keys.errors.SecretUnavailable` when the control plane's
    keyring cannot open it (its agent is then answered with that error and retries).
    """
    try:
        return Key(region.key_id, REGION_KEY.open(region))
    except SealedDataError as exc:
        raise unavailable(REGION_KEY.describe(region), exc) from None


def open_next_region_key(region: Region) -> Key | None:
    """The key of a pending rotation, or ``None`` when none is pending."""
    if not region.next_key_id:
        return None
    try:
        return Key(region.next_key_id, REGION_NEXT_KEY.open(region))
    except SealedDataError as exc:
        raise unavailable(REGION_NEXT_KEY.describe(region), exc) from None


class RegionKeyUnknown(Conflict):
    """The agent says it holds a key that is neither the region's key nor the one waiting to
    replace it. Its agent stops: it was given the wrong key file, or an old one."""

    default_code = "region_key_unknown"


def region_key_for(region: Region, key_id: str | None) -> Key:
    """The key to sign and seal an answer with: the one the agent says it holds (the
    region's key when it says nothing, as agents from before key rotation do)."""
    if key_id is None or key_id == region.key_id:
        return open_region_key(region)
    if key_id == region.next_key_id:
        key = open_next_region_key(region)
        assert key is not None
        return key
    raise unknown_key(region, key_id)


def unknown_key(region: Region, key_id: str) -> RegionKeyUnknown:
    """The error for an agent holding ``key_id`` (a well-formed key id), naming the keys."""
    pending = (f", and {region.next_key_id!r} is waiting to replace it"
               if region.next_key_id else "")
    return RegionKeyUnknown(
        f"The agent holds region key {key_id!r}, which is not a key of region "
        f"{region.slug!r}: its key is {region.key_id!r}{pending}. Give the agent the key file "
        "written by 'moorage regions add' or 'moorage regions rotate-key'.",
        detail={"region": region.slug, "key_id": region.key_id,
                "next_key_id": region.next_key_id or None},
    )


def seal_for_region(region: Region, key: Key, credential: Credential) -> str:
    """The credential's current login password, re-sealed so only this region's agent can
    open it: a static password, or an exchanged credential's short-lived token, never its
    long-lived cloud key (I10)."""
    plaintext = current_login(credential).password
    aad = region_secret_aad(region=region.slug, account_id=credential.account_id,
                            credential_id=credential.pk, revision=credential.revision)
    return seal(key, plaintext.encode(), aad)


def seal_registry_password(region: Region, password: str) -> str:
    """Seal the region registry's password under the control plane's keyring (the region
    needs an id)."""
    return REGION_REGISTRY_PASSWORD.seal(region, password.encode())


def open_registry_password(region: Region) -> str:
    """The region registry's password in clear, for re-sealing it for the region's agent.

    Raises :class:`~moorage.keys.errors.SecretUnavailable` when the keyring cannot open it.
    """
    try:
        return REGION_REGISTRY_PASSWORD.open_text(region)
    except SealedDataError as exc:
        raise unavailable(REGION_REGISTRY_PASSWORD.describe(region), exc) from None


def registry_for_region(region: Region, key: Key) -> str:
    """The region registry's password re-sealed so only this region's agent opens it, for
    this revision of the registry settings."""
    aad = region_registry_aad(region=region.slug, revision=region.registry_revision)
    return seal(key, open_registry_password(region).encode(), aad)


def new_region_token() -> str:
    return REGION_TOKEN_PREFIX + random.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_well_formed(token: str) -> bool:
    return bool(_TOKEN_RE.match(token))

