"""Enumerations of the deployments domain."""

from django.db import models


class DeploymentStatus(models.TextChoices):
    """Where a deployment is; it only moves forward."""

    QUEUED = "queued", "Queued"
    BUILDING = "building", "Building"
    PULLING = "pulling", "Pulling"
    STARTING = "starting", "Starting"
    RUNNING = "running", "Running"
    FAILED = "failed", "Failed"

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

    CREDENTIAL = "credential", "With a credential"
    ANONYMOUS = "anonymous", "Anonymously"
