"""Reads of deployments, scoped to an account."""

from __future__ import annotations

from django.db.models import QuerySet

from moorage.accounts.models import Account
from moorage.apps.models import SourceArchive
from moorage.deployments.models import Deployment, DeploymentLog
from moorage.errors import NotFound
from moorage.regions.models import Region


def deployments_of_app(*, account: Account, app_id: int, limit: int = 50) -> list[Deployment]:
    return list(Deployment.objects.filter(app__account=account, app_id=app_id)
                .select_related("region", "app").order_by("-number", "region__slug")[:limit])


def deployment_get(*, account: Account, deployment_id: int) -> Deployment:
    deployment = (Deployment.objects.filter(app__account=account, id=deployment_id)
                  .select_related("region", "app").first())
    if deployment is None:
        raise NotFound("No such deployment in this account.", code="deployment_not_found")
    return deployment


def deployment_logs(*, deployment: Deployment, after: int = 0) -> QuerySet[DeploymentLog]:
    """Log lines after the line id ``after`` (for following a deploy)."""
    return deployment.logs.filter(id__gt=after).order_by("id")


def latest_per_region(*, app_id: int) -> list[Deployment]:
    """The newest deployment of an app in each region."""
    seen: set[int] = set()
    latest = []
    for deployment in Deployment.objects.filter(app_id=app_id).select_related("region") \
            .order_by("region__slug", "-number"):
        if deployment.region_id not in seen:
            seen.add(deployment.region_id)
            latest.append(deployment)
    return latest


def source_archive_for_region(*, region: Region, archive_id: int) -> SourceArchive:
    """An uploaded source a region's agent may download: of an account enabled there (I7)."""
    archive = (SourceArchive.objects.filter(
        id=archive_id, app__account__region_links__region=region).first())
    if archive is None:
        raise NotFound("No such source archive for this region.",
                       code="source_archive_not_found")
    return archive
