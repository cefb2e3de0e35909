"""Enumerations of the regions domain."""

from django.db import models

from moorage.protocol import enums


class Runtime(models.TextChoices):
    """What a region's agent drives."""

    DOCKER = enums.Runtime.DOCKER.value, "Docker Engine"
    SWARM = enums.Runtime.SWARM.value, "Docker Swarm"


class RegionStatus(models.TextChoices):
    """Whether a region's agent has been heard from lately."""

    ONLINE = "online", "Online"
    OFFLINE = "offline", "Offline"
    NEVER_SEEN = "never_seen", "Never connected"


class ChangeKind(models.TextChoices):
    """What a change-log row names."""

    CREDENTIAL = "credential", "Credential"
    ACCOUNT = "account", "Account enabled in or removed from a region"
    DEPLOYMENT = "deployment", "Deployment of an app in a region"
    APP = "app", "App removed from a region"
    LOGS = "logs", "Logs requested from a region's agent"
    REGION = "region", "Settings of a region (runtime, registry)"
    DRAIN = "drain", "Region asked to remove every app it runs"
