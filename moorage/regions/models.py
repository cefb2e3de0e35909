"""Regions, their tokens, which accounts use them, and the change log they sync from."""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone

from moorage.keys.fields import SealedTextField
from moorage.regions.choices import ChangeKind, RegionStatus, Runtime

# An agent long-polls every 25 s by default; three missed polls is offline.
OFFLINE_AFTER = timedelta(seconds=90)


class Region(models.Model):
    """A place where apps run, served by one agent process.

    The region key (AES-256) seals the secrets sent to the agent and signs every answer; the
    control plane keeps it sealed under its own keyring in ``key_sealed``. While a rotation
    of the region key is pending (``moorage regions rotate-key``), the new key waits in
    ``next_key_id``/``next_key_sealed``: answers use whichever of the two keys the agent says
    it holds, and the new key replaces the old once the agent proves it holds it
    (``docs/sync.md``, "Rotating a region key"). ``applied_revision`` is the change-log
    revision the agent last reported as applied.

    ``draining_since`` is set while the region is being removed with ``--drain``: its agent
    was sent ``region.drain`` and no new deploy goes there; ``drained_at`` is when the agent
    reported that it removed every app (``POST /agent/drained``), after which the region can
    go without leaving a container behind.
    """

    slug = models.SlugField(max_length=32, unique=True)
    name = models.CharField(max_length=100)
    runtime = models.CharField(max_length=16, choices=Runtime.choices, default=Runtime.DOCKER)
    key_id = models.CharField(max_length=32)
    key_sealed = SealedTextField()
    next_key_id = models.CharField(max_length=32, blank=True)
    next_key_sealed = SealedTextField(blank=True)
    enabled_for_new_accounts = models.BooleanField(default=False)
    last_seen_at = models.DateTimeField(null=True, blank=True)
    applied_revision = models.BigIntegerField(default=0)
    applied_at = models.DateTimeField(null=True, blank=True)
    registry = models.CharField(max_length=255, blank=True)
    registry_username = models.CharField(max_length=255, blank=True)
    registry_password_sealed = SealedTextField(blank=True)
    registry_revision = models.PositiveIntegerField(default=0)
    nodes = models.JSONField(default=list, blank=True)
    runtime_reported_at = models.DateTimeField(null=True, blank=True)
    draining_since = models.DateTimeField(null=True, blank=True)
    drained_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("slug",)
        constraints = [
            models.CheckConstraint(condition=models.Q(runtime__in=Runtime.values),
                                   name="region_runtime_valid"),
        ]

    def __str__(self) -> str:
        return self.slug

    @property
    def status(self) -> RegionStatus:
        if self.last_seen_at is None:
            return RegionStatus.NEVER_SEEN
        if timezone.now() - self.last_seen_at > OFFLINE_AFTER:
            return RegionStatus.OFFLINE
        return RegionStatus.ONLINE


class RegionToken(models.Model):
    """The bearer token of a region's agent. Only its SHA-256 is kept; rotating revokes."""

    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="tokens")
    digest = models.CharField(max_length=64, unique=True)
    prefix = models.CharField(max_length=16)
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.region} {self.prefix}…"


class AccountRegion(models.Model):
    """An account deploys to this region: its credentials are synced there."""

    account = models.ForeignKey("accounts.Account", on_delete=models.CASCADE,
                                related_name="region_links")
    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="account_links")
    enabled_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "region"], name="account_region_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.account} in {self.region}"


class SyncCounter(models.Model):
    """The single row holding the change log's latest revision.

    Writers lock it until their transaction commits, so revisions become visible in order.
    """

    revision = models.BigIntegerField(default=0)
    compacted_through = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"revision {self.revision}"


class Change(models.Model):
    """One change agents must see: it names an object; its content is read when sent.

    ``account_id`` and ``region_id`` are plain integers, not foreign keys, so the log still
    says what happened after the object is gone.
    """

    revision = models.BigIntegerField(unique=True)
    account_id = models.BigIntegerField()
    kind = models.CharField(max_length=16, choices=ChangeKind.choices)
    object_id = models.BigIntegerField()
    region_id = models.BigIntegerField(null=True, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("revision",)

    def __str__(self) -> str:
        return f"r{self.revision} {self.kind} {self.object_id}"


class CredentialReplica(models.Model):
    """Which revision of a credential a region's agent reported holding."""

    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="replicas")
    credential = models.ForeignKey("credentials.Credential", on_delete=models.CASCADE,
                                   related_name="replicas")
    revision = models.PositiveIntegerField()
    applied_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["region", "credential"],
                                    name="credential_replica_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.credential_id}@{self.region_id} r{self.revision}"


class RunningService(models.Model):
    """One app as a region's agent last reported it running (its service, or its container).

    ``credential``/``credential_revision`` is the credential whose login the engine keeps for
    it (a Swarm service's registry auth: I12), ``None`` for an anonymous pull or an engine
    that keeps none. Replaced as a whole by each report of the region.
    """

    region = models.ForeignKey(Region, on_delete=models.CASCADE, related_name="services")
    app = models.ForeignKey("apps.App", on_delete=models.CASCADE,
                            related_name="running_services")
    deployment_id = models.BigIntegerField()
    name = models.CharField(max_length=255)
    running = models.PositiveIntegerField()
    desired = models.PositiveIntegerField()
    credential = models.ForeignKey("credentials.Credential", on_delete=models.SET_NULL,
                                   null=True, blank=True, related_name="running_services")
    credential_revision = models.PositiveIntegerField(null=True, blank=True)
    reported_at = models.DateTimeField()

    class Meta:
        ordering = ("region__slug",)
        constraints = [
            models.UniqueConstraint(fields=["region", "app"], name="running_service_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.region_id} {self.running}/{self.desired}"
