"""Every change to regions: add, remove, rotate a token, enable for an account.

Regions are managed by platform staff; which regions an account deploys to is chosen by the
account's admins and owners. Enabling or disabling writes a region-specific change, so the
agent of that region takes or drops the account's data on its next sync.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from moorage import names
from moorage.accounts.models import Account, Membership, User
from moorage.accounts.permissions import Action, require, require_platform_staff
from moorage.audit.choices import AuditAction
from moorage.audit.services import audit_record
from moorage.errors import Conflict, NotFound, ValidationFailed
from moorage.private_files import write_private
from moorage.regions import changelog
from moorage.regions import secrets as region_secrets
from moorage.regions.choices import ChangeKind, Runtime
from moorage.regions.models import AccountRegion, Region, RegionToken
from moorage.sealing import Key

LOCAL_REGION = "local"
_SLUG = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


@dataclass(frozen=True)
class RegionCredentials:
    """What an agent needs, shown once: its token and the region key (``id:base64``)."""

    region: Region
    token: str
    key: Key


def _issue_token(region: Region) -> str:
    token = region_secrets.new_region_token()
    RegionToken.objects.create(region=region, digest=region_secrets.token_digest(token),
                               prefix=token[:12])
    return token


@transaction.atomic
def region_create(
    *, actor: User | None, slug: str, name: str = "", runtime: str = Runtime.DOCKER,
    enabled_for_new_accounts: bool = False, enable_for_existing_accounts: bool = False,
) -> RegionCredentials:
    """Add a region (platform staff). Returns its agent token and key, shown once."""
    if actor is not None:
        require_platform_staff(actor)
    slug = slug.strip().lower()
    if not _SLUG.match(slug):
        raise ValidationFailed(
            "A region slug is 1-32 lower-case letters, digits and hyphens, like eu-1.",
            code="region_slug_invalid", detail={"fields": {"slug": "invalid"}},
        )
    try:
        kind = Runtime(runtime)
    except ValueError:
        raise ValidationFailed(
            f"Unknown runtime {runtime!r}; use docker or swarm.", code="region_runtime_invalid",
            detail={"fields": {"runtime": "invalid"}},
        ) from None
    name = names.clean_name(name or slug, max_length=100)
    if Region.objects.filter(slug=slug).exists():
        raise Conflict(f"A region {slug!r} already exists.", code="region_exists")
    key = region_secrets.new_region_key(slug)
    try:
        with transaction.atomic():
            region = Region.objects.create(slug=slug, name=name, runtime=kind, key_id=key.id,
                                           key_sealed="",
                                           enabled_for_new_accounts=enabled_for_new_accounts)
    except IntegrityError:
        raise Conflict(f"A region {slug!r} already exists.", code="region_exists") from None
    region.key_sealed = region_secrets.seal_region_key(region, key)
    region.save(update_fields=["key_sealed", "key_id"])
    token = _issue_token(region)
    if enable_for_existing_accounts:
        for account in Account.objects.all():
            _enable(account, region)
    audit_record(account=None, actor=actor, action=AuditAction.REGION_CREATED, target=region,
                 details={"slug": slug, "runtime": kind.value})
    return RegionCredentials(region=region, token=token, key=key)


def _region(slug: str) -> Region:
    region = Region.objects.filter(slug=slug).first()
    if region is None:
        raise NotFound(f"No region {slug!r}.", code="region_not_found")
    return region


@transaction.atomic
def region_rotate_token(*, actor: User | None, slug: str) -> str:
    """Revoke the region's token(s) and issue a new one; the running agent stops."""
    if actor is not None:
        require_platform_staff(actor)
    region = _region(slug)
    RegionToken.objects.filter(region=region, revoked_at__isnull=True).update(
        revoked_at=timezone.now()
    )
    token = _issue_token(region)
    audit_record(account=None, actor=actor, action=AuditAction.REGION_TOKEN_ROTATED,
                 target=region, details={"slug": slug})
    return token


@transaction.atomic
def region_remove(*, actor: User | None, slug: str) -> None:
    """Remove a region: its agent's token stops working and no account deploys there."""
    if actor is not None:
        require_platform_staff(actor)
    region = _region(slug)
    audit_record(account=None, actor=actor, action=AuditAction.REGION_REMOVED, target=region,
                 details={"slug": slug})
    region.delete()


def _enable(account: Account, region: Region) -> bool:
    _, created = AccountRegion.objects.get_or_create(account=account, region=region)
    if created:
        changelog.record_change(account_id=account.pk, kind=ChangeKind.ACCOUNT,
                                object_id=account.pk, region_id=region.pk)
    return created


def enable_default_regions(account: Account) -> None:
    """Give a new account the regions marked for new accounts (the embedded local one)."""
    for region in Region.objects.filter(enabled_for_new_accounts=True):
        _enable(account, region)


@transaction.atomic
def account_regions_set(
    *, actor: User, membership: Membership, slugs: list[str]
) -> list[Region]:
    """Choose the regions the account deploys to (admins and owners)."""
    require(membership, Action.CHOOSE_REGIONS)
    account = membership.account
    wanted = {s.strip() for s in slugs if s.strip()}
    regions = {r.slug: r for r in Region.objects.filter(slug__in=wanted)}
    unknown = sorted(wanted - set(regions))
    if unknown:
        raise ValidationFailed(
            f"No region {', '.join(map(repr, unknown))}.", code="region_not_found",
            detail={"fields": {"regions": unknown}},
        )
    current = {link.region.slug: link for link in
               AccountRegion.objects.select_related("region").filter(account=account)}
    added = [slug for slug in sorted(wanted) if _enable(account, regions[slug])]
    removed = []
    for slug, link in sorted(current.items()):
        if slug not in wanted:
            link.delete()
            changelog.record_change(account_id=account.pk, kind=ChangeKind.ACCOUNT,
                                    object_id=account.pk, region_id=link.region_id)
            removed.append(slug)
    if added or removed:
        audit_record(account=account, actor=actor, action=AuditAction.ACCOUNT_REGIONS_CHANGED,
                     target=account, details={"enabled": added, "disabled": removed})
    return list(Region.objects.filter(account_links__account=account).order_by("slug"))


@transaction.atomic
def local_region_ensure(*, agent_dir: Path) -> Region | None:
    """Create the embedded ``local`` region and its agent's files, once.

    Writes ``token`` and ``key`` (mode 0600) into ``agent_dir`` for ``moorage up``. Returns
    the region when it was created now, ``None`` when it already existed.
    """
    if Region.objects.filter(slug=LOCAL_REGION).exists():
        return None
    created = region_create(actor=None, slug=LOCAL_REGION, name="Local (this machine)",
                            runtime=Runtime.DOCKER, enabled_for_new_accounts=True,
                            enable_for_existing_accounts=True)
    write_agent_files(agent_dir, token=created.token, key=created.key)
    return created.region


def write_agent_files(directory: Path, *, token: str, key: Key) -> None:
    """Write an agent's token and key files, readable by their owner only."""
    write_token_file(directory, token)
    write_private(directory / "key", key.encoded() + "\n")


def write_token_file(directory: Path, token: str) -> Path:
    """Write (or replace) an agent's token file; return its path."""
    return write_private(directory / "token", token + "\n")
