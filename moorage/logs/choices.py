"""Enumerations of the app-logs domain."""

from django.db import models


class LogStatus(models.TextChoices):
    """Where a log request is: waiting for the agent, receiving lines, answered."""

    PENDING = "pending", "Waiting for the region's agent"
    STREAMING = "streaming", "Receiving lines"
    DONE = "done", "Answered"
    FAILED = "failed", "Failed"

    @classmethod
    def finished(cls) -> frozenset[str]:
        return frozenset({cls.DONE, cls.FAILED})
