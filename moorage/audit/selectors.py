"""Reading the audit trail."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from moorage.audit.models import AuditEvent

if TYPE_CHECKING:
    from moorage.accounts.models import Account


def audit_events_for_account(
    *, account: Account, before_id: int | None = None, limit: int = 50
) -> list[AuditEvent]:
    """The account's events, newest first, ``limit`` at a time (keyset paging by id)."""
    events: QuerySet[AuditEvent] = AuditEvent.objects.filter(account=account).select_related(
        "actor"
    )
    if before_id is not None:
        events = events.filter(id__lt=before_id)
    return list(events.order_by("-id")[:limit])
