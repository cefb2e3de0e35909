"""Enumerations of the accounts domain."""

from django.db import models


class Role(models.TextChoices):
    """A member's role in one account, from the most to the least powerful."""

    OWNER = "owner", "Owner"
    ADMIN = "admin", "Admin"
    MEMBER = "member", "Member"
    VIEWER = "viewer", "Viewer"
