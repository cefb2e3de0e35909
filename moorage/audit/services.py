"""Writing the audit trail."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.db import models, transaction

from moorage.audit.choices import AuditAction
from moorage.audit.models import AuditEvent

if TYPE_CHECKING:
    from moorage.accounts.models import Account, User

# Keys that would invite a secret into the trail. A service passing one is a bug, caught loudly.
_FORBIDDEN_DETAIL_KEYS = ("password", "secret", "token", "key", "auth")
SYSTEM_ACTOR = "system"


def audit_event(
    *,
    account: Account | None,
    actor: User | None,
    action: AuditAction,
    target: models.Model,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """An audit row, checked and not yet saved: :func:`audit_record` saves one,
    :func:`audit_record_many` saves a batch.

    Raises ``ValueError`` for a detail key that looks like a secret (``password``, ``token``...),
    because details are shown to every member of the account.
    """
    details = details or {}
    for key in details:
        lowered = key.lower()
        if any(word in lowered for word in _FORBIDDEN_DETAIL_KEYS) and not lowered.endswith(
            ("_name", "_id", "_prefix")
        ):
            raise ValueError(f"audit detail {key!r} looks like a secret; record a name or id")
    return AuditEvent(
        account=account,
        actor=actor,
        actor_label=actor.email if actor is not None else SYSTEM_ACTOR,
        action=action,
        target_type=target._meta.model_name or type(target).__name__.lower(),
        target_id=str(target.pk),
        details=details,
    )


def audit_record(
    *,
    account: Account | None,
    actor: User | None,
    action: AuditAction,
    target: models.Model,
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Record ``action`` on ``target``; call it inside the service's own transaction.

    Raises ``ValueError`` for a detail key that looks like a secret (see :func:`audit_event`).
    """
    event = audit_event(account=account, actor=actor, action=action, target=target,
                        details=details)
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record must run inside the transaction of the change")
    event.save()
    return event


def audit_record_many(events: list[AuditEvent]) -> None:
    """Record a batch of :func:`audit_event` rows in one insert, inside the transaction of the
    changes (background work that changes many rows at once)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("audit_record_many must run inside the transaction of the changes")
    AuditEvent.objects.bulk_create(events)
