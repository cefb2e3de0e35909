"""REST endpoint for the account's activity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpRequest
from ninja import Field as SchemaField
from ninja import Query, Router, Schema

from moorage.accounts.models import Membership
from moorage.accounts.permissions import Action, require
from moorage.audit.selectors import audit_events_for_account

router = Router(tags=["audit"])


class AuditEventOut(Schema):
    id: int
    at: datetime
    actor: str
    action: str
    target_type: str
    target_id: str
    details: dict[str, Any]


class AuditQuery(Schema):
    before: int | None = None
    limit: int = SchemaField(50, ge=1, le=200)


@router.get("/audit/events", response=list[AuditEventOut], summary="The account's activity")
def audit_events(request: HttpRequest, query: Query[AuditQuery]) -> list[AuditEventOut]:
    membership: Membership = request.auth  # type: ignore[attr-defined]
    require(membership, Action.VIEW)
    events = audit_events_for_account(
        account=membership.account, before_id=query.before, limit=query.limit
    )
    return [
        AuditEventOut(
            id=e.id,
            at=e.at,
            actor=e.actor_label,
            action=e.action,
            target_type=e.target_type,
            target_id=e.target_id,
            details=e.details,
        )
        for e in events
    ]
