"""Reads of regions and their sync state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from moorage.accounts.models import Account
from moorage.credentials.models import Credential
from moorage.regions import changelog
from moorage.regions.choices import RegionStatus
from moorage.regions.models import Change, CredentialReplica, Region


@dataclass(frozen=True)
class RegionState:
    """A region as the Regions page and API show it."""

    region: Region
    status: RegionStatus
    lag_revisions: int
    lag_seconds: float
    enabled: bool  # for the asking account


def region_states(*, account: Account | None = None) -> list[RegionState]:
    """Every region with its status and lag (and whether ``account`` uses it)."""
    revision, _ = changelog.current_revision()
    # One query however many regions (a fleet has hundreds): the oldest change each region
    # has not applied yet comes from a subquery on the log's revision index.
    regions = list(Region.objects.order_by("slug").annotate(pending_since=Subquery(
        Change.objects.filter(revision__gt=OuterRef("applied_revision"))
        .order_by("revision").values("at")[:1])))
    enabled = set()
    if account is not None:
        enabled = set(account.region_links.values_list("region_id", flat=True))
    now = timezone.now()
    states = []
    for region in regions:
        pending_since: datetime | None = region.pending_since
        states.append(RegionState(
            region=region,
            status=region.status,
            lag_revisions=max(0, revision - region.applied_revision),
            lag_seconds=(now - pending_since).total_seconds() if pending_since else 0.0,
            enabled=region.pk in enabled,
        ))
    return states


@dataclass(frozen=True)
class ReplicaState:
    """One region's copy of one credential."""

    region: Region
    revision: int | None
    applied_at: datetime | None
    in_sync: bool


def credential_sync_states(*, credential: Credential) -> list[ReplicaState]:
    """Per enabled region: which revision of ``credential`` its agent holds."""
    regions = Region.objects.filter(account_links__account_id=credential.account_id) \
        .order_by("slug")
    replicas = {r.region_id: r for r in
                CredentialReplica.objects.filter(credential=credential)}
    states = []
    for region in regions:
        replica = replicas.get(region.pk)
        states.append(ReplicaState(
            region=region,
            revision=replica.revision if replica else None,
            applied_at=replica.applied_at if replica else None,
            in_sync=replica is not None and replica.revision == credential.revision,
        ))
    return states


def sync_summary(*, account: Account) -> tuple[int, dict[int, list[ReplicaState]]]:
    """``(number of enabled regions, credential id → per-region states)`` in two queries."""
    regions = list(Region.objects.filter(account_links__account=account).order_by("slug"))
    replicas: dict[tuple[int, int], CredentialReplica] = {
        (r.credential_id, r.region_id): r
        for r in CredentialReplica.objects.filter(credential__account=account,
                                                  region__in=regions)
    }
    by_credential: dict[int, list[ReplicaState]] = {}
    for credential_id, revision in Credential.objects.filter(account=account).values_list(
            "id", "revision"):
        states = []
        for region in regions:
            replica = replicas.get((credential_id, region.pk))
            states.append(ReplicaState(
                region=region,
                revision=replica.revision if replica else None,
                applied_at=replica.applied_at if replica else None,
                in_sync=replica is not None and replica.revision == revision,
            ))
        by_credential[credential_id] = states
    return len(regions), by_credential
