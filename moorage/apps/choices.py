"""Enumerations of the apps domain."""

from django.db import models


class SourceMode(models.TextChoices):
    """Where an app's image comes from."""

    IMAGE = "image", "Use image"
    BUILD = "build", "Build from source"


class RuntimePull(models.TextChoices):
    """How the image of an image app is pulled at deploy time (invariant I5)."""

    ACCOUNT_DEFAULT = "account_default", "Use account default"
    NONE = "none", "None (public image)"
    CREDENTIAL = "credential", "A named credential"
