"""The audit event model."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from moorage.audit.choices import AuditAction


class AuditEvent(models.Model):
    """One change in an account, recorded in the same transaction as the change.

    ``actor`` is kept as a label too, so the trail still reads after a user is deleted.
    ``details`` never holds a secret: :func:`moorage.audit.services.audit_record` refuses keys
    that look like one.
    """

    account = models.ForeignKey(
        "accounts.Account",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="audit_events",
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True
    )
    actor_label = models.CharField(max_length=254)
    action = models.CharField(max_length=64, choices=AuditAction.choices)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=64)
    details = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ("-at", "-id")
        indexes = [models.Index(fields=["account", "-at"], name="audit_account_at")]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_label}"
