"""Log requests: an app's output passing through the control plane, briefly."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from moorage.logs.choices import LogStatus


class LogRequest(models.Model):
    """One ask for an app's output in one region, and the answer while it is being read.

    A member creates it; the region's agent learns of it through its changes feed (op
    ``logs.request``) and uploads the lines, masked and bounded, in numbered chunks; the
    member reads them (``lines`` from an index on), and the row is deleted once its final
    chunk has been read, or at ``expires_at`` whatever happened. Nothing of it is audited or
    logged: it is a read, and its lines are the app's own output.

    ``tail`` is the number of newest lines (``None``: all lines after ``since``); ``since`` a
    cursor (exclusive, the engine's timestamp of a line); ``follow`` the seconds the agent
    keeps streaming new lines. ``lines`` holds ``[timestamp, text]`` pairs; ``chunks`` counts
    the chunks taken (the next one's ``seq``); ``size`` the UTF-8 bytes of the text.
    """

    app = models.ForeignKey("apps.App", on_delete=models.CASCADE, related_name="log_requests")
    region = models.ForeignKey("regions.Region", on_delete=models.CASCADE,
                               related_name="log_requests")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                     null=True, blank=True, related_name="+")
    tail = models.PositiveIntegerField(null=True, blank=True)
    since = models.CharField(max_length=40, blank=True)
    follow = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(max_length=16, choices=LogStatus.choices,
                              default=LogStatus.PENDING)
    lines = models.JSONField(default=list, blank=True)
    chunks = models.PositiveIntegerField(default=0)
    size = models.PositiveIntegerField(default=0)
    cursor = models.CharField(max_length=40, blank=True)
    truncated = models.BooleanField(default=False)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    answer_by = models.DateTimeField(help_text="No chunk by then: the agent did not answer.")
    finish_by = models.DateTimeField(help_text="No final chunk by then: the agent stopped.")
    expires_at = models.DateTimeField(help_text="Deleted after this, read or not.")

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=["expires_at"], name="log_request_expiry")]

    def __str__(self) -> str:
        return f"logs of {self.app_id} in {self.region_id} ({self.status})"

    @property
    def finished(self) -> bool:
        return self.status in LogStatus.finished()
