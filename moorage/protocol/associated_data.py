"""Associated data of values sealed for a region (``docs/sync.md``, "Sealing for a region").

A value sealed with a region key opens only with exactly these bytes, so a ciphertext moved to
another region, credential, field, revision, deployment or variable does not open.
"""

from __future__ import annotations


def region_secret_aad(
    *, region: str, account_id: int, credential_id: int, revision: int, field: str = "secret"
) -> bytes:
    """Associated data of a secret sealed for a region: it opens only there, for that
    credential, field and revision."""
    return (
        f"moorage/region-credential/v1|region={region}|account={account_id}"
        f"|credential={credential_id}|field={field}|revision={revision}"
    ).encode()


def region_env_aad(
    *, region: str, account_id: int, app_id: int, deployment_id: int, name: str
) -> bytes:
    """Associated data of a secret app env value sealed for a region's deployment."""
    return (
        f"moorage/region-app-env/v1|region={region}|account={account_id}|app={app_id}"
        f"|deployment={deployment_id}|name={name}"
    ).encode()


def region_registry_aad(*, region: str, revision: int) -> bytes:
    """Associated data of the region registry's password sealed for the region's agent: it
    opens only there, for that revision of the registry settings."""
    return f"moorage/region-registry/v1|region={region}|field=password|revision={revision}".encode()
