"""Deployments and their step logs."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from moorage.deployments.choices import DeploymentStatus, PullMode


class Deployment(models.Model):
    """One deploy of an app in one region (a deploy of a two-region app makes two).

    At most one deployment of an app per region is ``running``: the one that started last.
    A newer one that starts makes the older ones that never started ``superseded``, and one
    that comes up makes the one it replaced ``replaced`` (``deployment_report``).

    The pull is resolved when the deployment is created (I5): ``credential`` and
    ``credential_revision`` say what the agent must use at least — the runtime-pull credential
    of an image deploy, the build-pull credential of a build; ``used_revision`` is what it
    reported using (I6). ``build`` freezes a build's source and Dockerfile settings. The
    credential's name is kept as text so the history still reads after it is deleted.
    ``default_host`` records why an app on "Use account default" pulled anonymously: the
    default was for that other registry.
    """

    app = models.ForeignKey("apps.App", on_delete=models.CASCADE, related_name="deployments")
    region = models.ForeignKey("regions.Region", on_delete=models.CASCADE,
                               related_name="deployments")
    number = models.PositiveIntegerField(help_text="The app's deploy number, shared by regions.")
    image = models.CharField(max_length=512)
    pull_mode = models.CharField(max_length=16, choices=PullMode.choices)
    credential = models.ForeignKey("credentials.Credential", on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="deployments")
    credential_name = models.CharField(max_length=100, blank=True)
    credential_revision = models.PositiveIntegerField(null=True, blank=True)
    default_host = models.CharField(
        max_length=255, blank=True,
        help_text="The account default's registry, when the default was not used because the "
                  "image is on another registry (the pull is then anonymous).")
    used_revision = models.PositiveIntegerField(null=True, blank=True)
    image_digest = models.CharField(max_length=100, blank=True)
    container_id = models.CharField(max_length=80, blank=True)
    status = models.CharField(max_length=16, choices=DeploymentStatus.choices,
                              default=DeploymentStatus.QUEUED)
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.CharField(max_length=1000, blank=True)
    build = models.JSONField(null=True, blank=True,
                             help_text="The build spec of a build-from-source deploy.")
    progress = models.JSONField(default=dict, blank=True,
                                help_text="Layer id → [current, total] while pulling.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True,
                                      help_text="When its agent started it (its first report).")
    finished_at = models.DateTimeField(null=True, blank=True)
    reported_at = models.DateTimeField(
        null=True, blank=True,
        help_text="When its agent last reported on it (a deployment no report moves for long "
                  "is shown stalled).")

    class Meta:
        ordering = ("-number", "region__slug")
        constraints = [
            models.UniqueConstraint(fields=["app", "region", "number"],
                                    name="deployment_number_unique"),
            models.UniqueConstraint(fields=["app", "region"],
                                    condition=models.Q(status=DeploymentStatus.RUNNING),
                                    name="deployment_one_running"),
        ]
        indexes = [models.Index(fields=["app", "region", "-number"], name="deployment_latest")]

    def __str__(self) -> str:
        return f"{self.app} #{self.number} in {self.region}"

    @property
    def finished(self) -> bool:
        return self.status in DeploymentStatus.finished()

    @property
    def pull_summary(self) -> str:
        """How it pulled, in the page's and the API's words: ``'ghcr-prod' (revision 3)``,
        ``anonymous``, or ``anonymous (the default is for ghcr.io)``."""
        if self.credential_name:
            revision = self.used_revision or self.credential_revision
            return f"'{self.credential_name}' (revision {revision})"
        if self.default_host:
            return f"anonymous (the default is for {self.default_host})"
        return "anonymous"


class DeploymentLog(models.Model):
    """One line of a deployment's step log, as the agent reported it."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="logs")
    at = models.DateTimeField(auto_now_add=True)
    line = models.CharField(max_length=1000)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return self.line
