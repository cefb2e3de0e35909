"""Enumerations of the deployments domain."""

from django.db import models

from moorage.protocol import enums


class DeploymentStatus(models.TextChoices):
    """Where a deployment is; it only moves forward.

    ``superseded``: a newer deployment of the app took its place in the region before it
    started (it never ran). ``replaced``: it ran, and a newer deployment of the app now runs
    in its place. Both are set by the control plane (``docs/sync.md``), never reported.
    """

    QUEUED = "queued", "Queued"
    BUILDING = enums.ReportStatus.BUILDING.value, "Building"
    PULLING = enums.ReportStatus.PULLING.value, "Pulling"
    STARTING = enums.ReportStatus.STARTING.value, "Starting"
    RUNNING = enums.ReportStatus.RUNNING.value, "Running"
    FAILED = enums.ReportStatus.FAILED.value, "Failed"
    SUPERSEDED = "superseded", "Superseded"
    REPLACED = "replaced", "Replaced"
    #: Set by the control plane, not an agent: the app was stopped in this region (the
    #: region was disabled for the account); its message says why and by whom.
    STOPPED = "stopped", "Stopped"

    @classmethod
    def finished(cls) -> frozenset[str]:
        """Statuses an agent's report no longer moves (``running`` may still become
        ``replaced``)."""
        return frozenset({cls.RUNNING, cls.FAILED, cls.SUPERSEDED, cls.REPLACED, cls.STOPPED})

    @classmethod
    def in_progress(cls) -> frozenset[str]:
        """Statuses of a deployment its agent is working on."""
        return frozenset({cls.BUILDING, cls.PULLING, cls.STARTING})


ORDER = {
    DeploymentStatus.QUEUED: 0,
    DeploymentStatus.BUILDING: 1,
    DeploymentStatus.PULLING: 1,
    DeploymentStatus.STARTING: 2,
    DeploymentStatus.RUNNING: 3,
    DeploymentStatus.FAILED: 3,
    DeploymentStatus.SUPERSEDED: 3,
    DeploymentStatus.REPLACED: 4,
    DeploymentStatus.STOPPED: 4,
}


class PullMode(models.TextChoices):
    """How the agent authenticates the pull (resolved when the deployment is created)."""

    CREDENTIAL = enums.PullMode.CREDENTIAL.value, "With a credential"
    ANONYMOUS = enums.PullMode.ANONYMOUS.value, "Anonymously"
