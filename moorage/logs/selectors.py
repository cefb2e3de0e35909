"""Reads of log requests."""

from __future__ import annotations

from collections.abc import Iterable

from django.utils import timezone

from moorage.logs.choices import LogStatus
from moorage.logs.models import LogRequest
from moorage.regions.models import Region


def log_requests_waiting(*, region: Region, ids: Iterable[int]) -> dict[int, LogRequest]:
    """Those of ``ids`` the region's agent should still answer: its own, not answered yet,
    not timed out (a changes answer names them in ``logs.request`` ops)."""
    return {r.pk: r for r in LogRequest.objects.filter(
        id__in=set(ids), region=region, status=LogStatus.PENDING,
        answer_by__gt=timezone.now()).select_related("app")}
