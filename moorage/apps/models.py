"""The app model and its environment."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from moorage.apps.choices import RuntimePull, SourceMode
from moorage.keys.fields import SealedTextField
from moorage.protocol.readiness import (
    READY_TIMEOUT_DEFAULT,
    READY_TIMEOUT_MAX,
    READY_TIMEOUT_MIN,
)


class App(models.Model):
    """Something an account runs in one or more regions.

    In ``image`` mode it runs ``image``, pulled at deploy time as ``runtime_pull`` says:
    the account default (resolved when a deploy starts), anonymously, or with
    ``runtime_pull_credential`` — a container-registry credential of the same account.
    In ``build`` mode the region's agent builds ``git_url`` at ``git_ref`` (cloned with
    ``git_credential``) or the uploaded ``source_archive`` (one or the other), pulling base
    images with ``build_pull_credential`` or anonymously —
    never with the account default — and keeps the built image in the region.
    A credential an app names cannot be deleted (``PROTECT``); the services say which apps.
    """

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE,
                                related_name="apps")
    name = models.SlugField(max_length=63)
    source = models.CharField(max_length=16, choices=SourceMode.choices,
                              default=SourceMode.IMAGE)
    image = models.CharField(max_length=512, blank=True)
    runtime_pull = models.CharField(max_length=32, choices=RuntimePull.choices,
                                    default=RuntimePull.ACCOUNT_DEFAULT)
    runtime_pull_credential = models.ForeignKey(
        "credentials.Credential", on_delete=models.PROTECT, null=True, blank=True,
        related_name="runtime_apps",
    )
    git_url = models.CharField(max_length=2048, blank=True)
    git_ref = models.CharField(max_length=255, blank=True, default="main",
                               help_text="Branch, tag or commit.")
    git_credential = models.ForeignKey(
        "credentials.Credential", on_delete=models.PROTECT, null=True, blank=True,
        related_name="git_apps",
    )
    source_archive = models.ForeignKey(
        "apps.SourceArchive", on_delete=models.SET_NULL, null=True, blank=True,
        related_name="+",
        help_text="An uploaded source tarball, built instead of a git repository.",
    )
    dockerfile = models.CharField(max_length=255, default="Dockerfile")
    context = models.CharField(max_length=255, default=".")
    build_args = models.JSONField(default=dict, blank=True)
    build_pull_credential = models.ForeignKey(
        "credentials.Credential", on_delete=models.PROTECT, null=True, blank=True,
        related_name="build_pull_apps",
        help_text="Authenticates base-image pulls of builds. Never the account default.",
    )
    port = models.PositiveIntegerField(null=True, blank=True)
    command = models.JSONField(null=True, blank=True, help_text="Arguments, or null for the "
                               "image's own command.")
    replicas = models.PositiveSmallIntegerField(default=1)
    ready_timeout = models.PositiveSmallIntegerField(
        default=READY_TIMEOUT_DEFAULT,
        help_text="Seconds a new version may take to run (and accept connections on the "
                  "port) before it is given up and the previous version serves again.")
    regions = models.ManyToManyField("regions.Region", related_name="apps", blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(fields=["account", "name"], name="app_name_unique"),
            models.CheckConstraint(
                condition=(
                    models.Q(runtime_pull=RuntimePull.CREDENTIAL,
                             runtime_pull_credential__isnull=False)
                    | (~models.Q(runtime_pull=RuntimePull.CREDENTIAL)
                       & models.Q(runtime_pull_credential__isnull=True))
                ),
                name="app_pull_credential_matches_mode",
            ),
            models.CheckConstraint(
                condition=models.Q(ready_timeout__gte=READY_TIMEOUT_MIN,
                                   ready_timeout__lte=READY_TIMEOUT_MAX),
                name="app_ready_timeout_bounds",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class EnvVar(models.Model):
    """One environment variable of an app. A secret value is sealed like a credential's
    (:data:`moorage.keys.registry.APP_ENV_SECRET`), bound to its app and name."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="env")
    name = models.CharField(max_length=128)
    value = models.TextField(blank=True, help_text="Plain value (empty when secret).")
    secret = models.BooleanField(default=False)
    sealed = SealedTextField(blank=True, help_text="Sealed value of a secret variable.")

    class Meta:
        ordering = ("name",)
        constraints = [
            models.UniqueConstraint(fields=["app", "name"], name="env_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class SourceArchive(models.Model):
    """A gzipped tarball of an app's source, uploaded for a build instead of a git repository.

    The file is ``DATA_DIR/sources/<app id>/<sha256>.tar.gz`` (``moorage.apps.sources``); a
    deployment freezes the archive's id, sha256 and size, and the region's agent downloads
    it and checks both. The newest few of an app are kept.
    """

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="source_archives")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at", "-id")
        constraints = [
            models.UniqueConstraint(fields=["app", "sha256"], name="source_archive_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size} bytes)"
