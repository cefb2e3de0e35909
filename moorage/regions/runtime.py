"""What region agents report about their runtime: nodes, what runs, and the credential
revision each service's registry auth carries (I12, "applied to N services").

An agent sends the whole picture (``POST /agent/runtime``, ``docs/sync.md``); it replaces the
region's previous one. A report is taken only for what the region was sent: apps of accounts
enabled in the region that have a deployment there, and credentials of the app's own account.
Anything else in it is dropped, so an agent cannot make another region's or another
account's app (or credential) look applied.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from moorage.apps.models import App
from moorage.credentials.models import Credential
from moorage.protocol.runtime_report import RuntimeReport
from moorage.regions.models import AccountRegion, Region, RunningService


@transaction.atomic
def runtime_report_record(*, region: Region, report: RuntimeReport) -> int:
    """Replace what ``region`` runs with ``report``; return how many services were kept."""
    now = timezone.now()
    enabled = set(AccountRegion.objects.filter(region=region)
                  .values_list("account_id", flat=True))
    apps = {
        app.pk: app for app in App.objects.filter(
            id__in={s.app_id for s in report.services}, account_id__in=enabled,
            deployments__region=region).distinct()
    }
    owners = dict(Credential.objects.filter(
        id__in={s.credential_id for s in report.services if s.credential_id is not None})
        .values_list("id", "account_id"))
    rows: dict[int, RunningService] = {}
    for service in report.services:
        app = apps.get(service.app_id)
        if app is None or app.account_id != service.account_id:
            continue  # not something this region was sent
        mine = service.credential_id is not None \
            and owners.get(service.credential_id) == app.account_id
        rows[app.pk] = RunningService(
            region=region, app=app, deployment_id=service.deployment_id, name=service.name,
            running=service.running, desired=service.desired,
            credential_id=service.credential_id if mine else None,
            credential_revision=service.credential_revision if mine else None,
            reported_at=now)
    RunningService.objects.filter(region=region).delete()
    RunningService.objects.bulk_create(rows.values())
    Region.objects.filter(pk=region.pk).update(
        nodes=[node.to_payload() for node in report.nodes], runtime_reported_at=now)
    return len(rows)
