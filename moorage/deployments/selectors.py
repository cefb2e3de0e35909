"""Reads of deployments, scoped to an account."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from moorage.accounts.models import Account
from moorage.apps.models import SourceArchive
from moorage.deployments.choices import DeploymentStatus
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


@dataclass(frozen=True)
class Stall:
    """Why a deployment that is not finished makes no progress (``code``: ``agent_offline``,
    ``agent_silent``), and since when."""

    code: str
    message: str
    since: datetime


def deployment_stall(deployment: Deployment, *, now: datetime | None = None) -> Stall | None:
    """Whether ``deployment`` is stalled: not finished, and its region's agent has not been in
    touch (or, while it runs the deployment, has not reported on it) for longer than
    ``settings.DEPLOY_STALLED_AFTER`` seconds. Not a status: the deployment goes on if the
    agent comes back; it says why a follower should stop waiting.

    The app's readiness timeout is added to the bound: an agent waiting for a new version
    to come up sends nothing meanwhile (and does not poll either)."""
    if deployment.finished:
        return None
    now = now or timezone.now()
    bound = timedelta(seconds=settings.DEPLOY_STALLED_AFTER + deployment.app.ready_timeout)
    region = deployment.region
    seen = region.last_seen_at
    if seen is None and now - deployment.created_at > bound:
        return Stall("agent_offline",
                     f"The agent of region {region.slug} has never connected to the control "
                     "plane, so nothing runs this deployment. Start the region's agent "
                     "('moorage agent ...'); the deployment runs once it connects.",
                     deployment.created_at)
    if seen is not None and now - seen > bound:
        return Stall("agent_offline",
                     f"The agent of region {region.slug} has not been in touch for "
                     f"{_duration(now - seen)} (last seen {seen:%Y-%m-%d %H:%M:%S} UTC). The "
                     "deployment goes on when it is back; check that it runs.", seen)
    if deployment.status in DeploymentStatus.in_progress():
        last = deployment.reported_at or deployment.started_at or deployment.created_at
        if now - last > bound:
            return Stall("agent_silent",
                         f"The agent of region {region.slug} is in touch but has not reported "
                         f"on this deployment for {_duration(now - last)} (it was "
                         f"{deployment.status}). Its log says why; redeploy if it restarted.",
                         last)
    return None


def _duration(delta: timedelta) -> str:
    """'45 s', '3 min 5 s', '2 h 10 min'."""
    seconds = int(delta.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"
