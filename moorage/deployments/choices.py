"""Enumerations of the deployments domain."""

from django.db import models

from moorage.protocol import enums


class DeploymentStatus(models.TextChoices):
    """Where a deployment is; it only moves forward."""

    QUEUED = "queued", "Queued"
    BUILDING = enums.ReportStatus.BUILDING.value, "Building"
    PULLING = enums.ReportStatus.PULLING.value, "Pulling"
    STARTING = enums.ReportStatus.STARTING.value, "Starting"
    RUNNING = enums.ReportStatus.RUNNING.value, "Running"
    FAILED = enums.ReportStatus.FAILED.value, "Failed"

    @classmethod
    def finished(cls) -> frozenset[str]:
        return frozenset({cls.RUNNING, cls.FAILED})


ORDER = {
    DeploymentStatus.QUEUED: 0,
    DeploymentStatus.BUILDING: 1,
    DeploymentStatus.PULLING: 1,
    DeploymentStatus.STARTING: 2,
    DeploymentStatus.RUNNING: 3,
    DeploymentStatus.FAILED: 3,
}


class PullMode(models.TextChoices):
    """How the agent authenticates the pull (resolved when the deployment is created)."""

    CREDENTIAL = enums.PullMode.CREDENTIAL.value, "With a credential"
    ANONYMOUS = enums.PullMode.ANONYMOUS.value, "Anonymously"
