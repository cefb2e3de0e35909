"""Enumerations of the accounts domain."""

from django.db import models


class Role(models.TextChoices):
    """A member's role in one account, from the most to the least powerful."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"


class InvitationStatus(models.TextChoices):
    """Where an invitation stands. An expired one stays ``pending`` until it is replaced; its
    ``expires_at`` says it can no longer be accepted."""

    PENDING = "pending", "Pending"
    ACCEPTED = "accepted", "Accepted"
    DECLINED = "declined", "Declined"
    REVOKED = "revoked", "Revoked"
