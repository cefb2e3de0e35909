"""Reads of regions and their sync state."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import OuterRef, Subquery
from django.utils import timezone

from moorage.accounts.models import Account
from moorage.credentials.models import Credential
from moorage.regions import changelog
from moorage.regions.choices import RegionStatus
from moorage.regions.models import Change, CredentialReplica, Region, RunningService


@dataclass(frozen=True)
class RegionState:
    """A region as the Regions page and API show it (``nodes``: a swarm's, as reported)."""

    region: Region
    status: RegionStatus
    lag_revisions: int
    lag_seconds: float
    enabled: bool  # for the asking account
    nodes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def nodes_ready(self) -> int:
        """How many reported nodes are ready."""
        return sum(1 for n in self.nodes if n.get("state") == "ready")


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
            nodes=[n for n in region.nodes if isinstance(n, dict)]
            if isinstance(region.nodes, list) else [],
        ))
    return states


@dataclass(frozen=True)
class ReplicaState:
    """One region's copy of one credential, and the services there whose registry auth it
    is (``services``) and that carry its current revision (``services_applied``, I12)."""

    region: Region
    revision: int | None
    applied_at: datetime | None
    in_sync: bool
    services: int = 0
    services_applied: int = 0


def _service_counts(credentials: dict[int, int]) -> tuple[Counter[tuple[int, int]],
                                                          Counter[tuple[int, int]]]:
    """``(credential, region)`` → services using it, and using its current revision."""
    using: Counter[tuple[int, int]] = Counter()
    applied: Counter[tuple[int, int]] = Counter()
    for credential_id, region_id, revision in RunningService.objects.filter(
            credential_id__in=credentials).values_list("credential_id", "region_id",
                                                      "credential_revision"):
        using[(credential_id, region_id)] += 1
        if revision == credentials[credential_id]:
            applied[(credential_id, region_id)] += 1
    return using, applied


def credential_sync_states(*, credential: Credential) -> list[ReplicaState]:
    """Per enabled region: which revision of ``credential`` its agent holds."""
    regions = Region.objects.filter(account_links__account_id=credential.account_id) \
        .order_by("slug")
    replicas = {r.region_id: r for r in
                CredentialReplica.objects.filter(credential=credential)}
    using, applied = _service_counts({credential.pk: credential.revision})
    states = []
    for region in regions:
        replica = replicas.get(region.pk)
        states.append(ReplicaState(
            region=region,
            revision=replica.revision if replica else None,
            applied_at=replica.applied_at if replica else None,
            in_sync=replica is not None and replica.revision == credential.revision,
            services=using[(credential.pk, region.pk)],
            services_applied=applied[(credential.pk, region.pk)],
        ))
    return states


def sync_summary(*, account: Account) -> tuple[int, dict[int, list[ReplicaState]]]:
    """``(number of enabled regions, credential id → per-region states)`` in four queries."""
    regions = list(Region.objects.filter(account_links__account=account).order_by("slug"))
    replicas: dict[tuple[int, int], CredentialReplica] = {
        (r.credential_id, r.region_id): r
        for r in CredentialReplica.objects.filter(credential__account=account,
                                                  region__in=regions)
    }
    by_credential: dict[int, list[ReplicaState]] = {}
    revisions = dict(Credential.objects.filter(account=account).values_list("id", "revision"))
    using, applied = _service_counts(revisions)
    for credential_id, revision in revisions.items():
        states = []
        for region in regions:
            replica = replicas.get((credential_id, region.pk))
            states.append(ReplicaState(
                region=region,
                revision=replica.revision if replica else None,
                applied_at=replica.applied_at if replica else None,
                in_sync=replica is not None and replica.revision == revision,
                services=using[(credential_id, region.pk)],
                services_applied=applied[(credential_id, region.pk)],
            ))
        by_credential[credential_id] = states
    return len(regions), by_credential


def running_services(*, app_id: int) -> list[RunningService]:
    """Where an app runs, per region, as the regions' agents last reported it."""
    return list(RunningService.objects.filter(app_id=app_id).select_related("region")
                .order_by("region__slug"))
